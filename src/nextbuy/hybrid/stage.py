"""One stage of the hybrid pipeline: generators and features fitted on the events before one
cutoff, and what the ranker made of a stage's candidates (`Scored`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nextbuy.data.content import ContentFeatures
from nextbuy.data.matrix import InteractionMatrix, build_matrix
from nextbuy.hybrid.candidates import (
    CandidateRequest,
    CandidateSet,
    Generator,
    generate,
)
from nextbuy.hybrid.config import HybridConfig
from nextbuy.hybrid.features import (
    FeatureBuilder,
    RankingContext,
    RequestTime,
    before,
)
from nextbuy.hybrid.objective import ValueObjective, rank_groups

EXPOSURE_SCALE = 1000.0  # exposure share in tenths of a percent inside the log


class Stage:
    """Generators and features fitted on the events before one cutoff."""

    def __init__(
        self,
        events: pd.DataFrame,
        items: pd.DataFrame | None,
        content: ContentFeatures,
        cutoff: pd.Timestamp,
        config: HybridConfig,
        *,
        fit: bool = True,
    ) -> None:
        self.cutoff = cutoff
        self.config = config
        past = before(events, cutoff)
        self.events = past
        self.generators: list[Generator] = [spec.build() for spec in config.generators or []]
        # one training matrix per decay the generators ask for; "default" is the pipeline's
        self.matrices = {
            hl: self._matrix(past, content, config.half_life_days if hl == "default" else hl)
            for hl in {"default", *(g.half_life_days for g in self.generators)}
        }
        self.data = self.matrices["default"]
        self.item_ids = np.asarray(self.data.item_ids, dtype=object)
        if fit:
            for generator in self.generators:
                generator.fit(self.matrices[generator.half_life_days], items, content)
        self.features = FeatureBuilder(past, self.item_ids, content, cutoff)

    def _matrix(
        self, past: pd.DataFrame, content: ContentFeatures, half_life: Any
    ) -> InteractionMatrix:
        return build_matrix(
            [past[["user_id", "item_id", "event_type", "timestamp"]]],
            self.config.event_weights(),
            half_life,
            reference_time=self.cutoff,
            item_ids=list(content.item_ids),
        )

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def request(
        self,
        user_ids: Sequence[str],
        extra_events: pd.DataFrame | None = None,
        now: RequestTime = None,
    ) -> dict[Any, CandidateRequest]:
        """Per matrix: history, recent-items and exclusion rows of these users at request time.

        Events since the cutoff join the histories at full weight (they are the newest).
        """
        mine, _ = self.features.user_events(user_ids, extra_events, now)
        fresh = None
        if extra_events is not None and len(extra_events):
            late = mine.loc[mine["timestamp"] >= self.cutoff]
            fresh = self._rows(late, user_ids, late["weight"].to_numpy())
        recent = self._recent(mine, user_ids)
        out: dict[Any, CandidateRequest] = {}
        for key, data in self.matrices.items():
            histories = data.rows(list(user_ids))
            if fresh is not None:
                histories = histories + fresh
            histories = sp.csr_matrix(histories, dtype=np.float32)
            exclude = sp.csr_matrix(histories > 0, dtype=np.float32)
            keep_seen = self.config.protocol == "repeat"
            out[key] = CandidateRequest(histories, recent, exclude, keep_seen)
        return out

    def _rows(
        self, events: pd.DataFrame, user_ids: Sequence[str], values: np.ndarray
    ) -> sp.csr_matrix:
        rows = pd.Index(np.asarray(user_ids, dtype=object)).get_indexer(events["user_id"])
        cols = pd.Index(self.item_ids).get_indexer(events["item_id"])
        ok = (rows >= 0) & (cols >= 0)
        out = sp.csr_matrix(
            (np.asarray(values, np.float32)[ok], (rows[ok], cols[ok])),
            shape=(len(user_ids), self.n_items),
        )
        out.sum_duplicates()
        return out

    def _recent(self, mine: pd.DataFrame, user_ids: Sequence[str]) -> sp.csr_matrix:
        """The last `recent_items` distinct items per user, weights 1, 1/2, 1/3, ..."""
        latest = mine.sort_values("timestamp", ascending=False, kind="stable")
        latest = latest.drop_duplicates(["user_id", "item_id"])
        position = latest.groupby("user_id").cumcount().to_numpy()
        keep = position < self.config.recent_items
        return self._rows(latest.loc[keep], user_ids, 1.0 / (1.0 + position[keep]))

    def candidates(
        self,
        user_ids: Sequence[str],
        extra_events: pd.DataFrame | None = None,
        now: RequestTime = None,
        context: RankingContext | Sequence[RankingContext] | None = None,
    ) -> tuple[CandidateSet, pd.DataFrame, CandidateRequest]:
        """Merged candidates of these users, their ranker features and the default request."""
        requests = self.request(user_ids, extra_events, now)
        with threadpool_limits(self.config.n_jobs):
            candidates = generate(self.generators, requests, self.n_items)
        frame = self.features.build(
            candidates, user_ids, extra_events=extra_events, now=now, context=context
        )
        return candidates, frame, requests["default"]


# --------------------------------------------------------------------------- scored output


@dataclass
class Scored:
    """Every candidate of a request with its ranker score and calibrated probability."""

    user_ids: np.ndarray
    candidates: CandidateSet
    features: pd.DataFrame
    raw: np.ndarray
    probability: np.ndarray
    request: CandidateRequest
    exposure: np.ndarray | None = None  # share of active users whose list holds each item
    fallback: np.ndarray | None = None  # per candidate: the order for users with no history

    def top(
        self,
        k: int,
        objective: ValueObjective | None = None,
        price: Any = None,
        exposure_penalty: float = 0.0,
    ) -> np.ndarray:
        """(n_users, k) positions into the candidates of each user's best k, -1 padded.

        With an `objective` of weight > 0 the order is by relevance × value; an
        `exposure_penalty` then pushes items that most users' lists hold down, in log space.
        """
        score = self.ordering(objective, price, exposure_penalty)
        return rank_groups(self.candidates.rows, score, len(self.user_ids), k)

    def ordering(
        self,
        objective: ValueObjective | None = None,
        price: Any = None,
        exposure_penalty: float = 0.0,
    ) -> np.ndarray:
        """The score `top` orders each user's candidates by (see `top`)."""
        score = self.raw
        if objective is not None and objective.weight > 0:
            score = np.log(objective.score(self.probability, price))
        if exposure_penalty > 0 and self.exposure is not None:
            share = self.exposure[self.candidates.items]
            score = score - exposure_penalty * np.log1p(EXPOSURE_SCALE * share)
        if self.fallback is not None:
            # nothing to personalise on: the ranker, trained mostly on known customers, orders
            # these lists worse than the fallback generator does on its own
            cold = (np.diff(self.request.histories.indptr) == 0)[self.candidates.rows]
            score = np.where(cold, self.fallback, score)
        return score
