"""The multi-stage recommender: candidate generators → LambdaMART ranker → business objective.

```python
from nextbuy.hybrid import HybridConfig, HybridRecommender
hybrid = HybridRecommender(HybridConfig(protocol="discovery")).fit(events, items, cutoff)
hybrid.recommend(["17850"], k=10, explain=True)      # DataFrame: user, rank, item, reason ...
hybrid.precompute(n=50); hybrid.cached("17850", 10)  # the serving fast path
hybrid.save(path); HybridRecommender.load(path)
```

Training (`fit`) never reads an event at or after `cutoff`:

1. The ranker's examples come from `label_windows` windows of `label_days` just before the
   cutoff. For a window [start, end), generators are fitted and features computed on events
   before `start`; the users who bought in the window are the queries, their purchases the
   labels.
2. The ranker (LightGBM LambdaMART) learns on those examples.
3. The generators are fitted again on everything before the cutoff: that final stage, with
   features as of the cutoff, is what serves.

`protocol="discovery"` never proposes an item the user already has; `"repeat"` adds the
buy-again generator (the only one that proposes what the user has) and lets the ranker weigh
repurchases against discoveries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from nextbuy.data.catalog_text import catalog_frame
from nextbuy.data.content import ContentFeatures
from nextbuy.data.files import atomic_write_text
from nextbuy.errors import DataError, NotFittedError, NotFoundError
from nextbuy.hybrid.candidates import (
    CandidateSet,
)
from nextbuy.hybrid.config import HybridConfig
from nextbuy.hybrid.explain import ItemFacts, Reason, reasons
from nextbuy.hybrid.features import (
    RankingContext,
    RequestTime,
    before,
    label_contexts,
    prepare_events,
)
from nextbuy.hybrid.objective import ValueObjective
from nextbuy.hybrid.ranker import Ranker
from nextbuy.hybrid.stage import Scored, Stage

FORMAT_VERSION = 1
EXPOSURE_K = 10  # list length the exposure shares are measured at
EXPOSURE_USERS = 2000  # active users scored to measure them
Step = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class HybridRecommender:
    """Candidates from several generators, ranked by LambdaMART, with reasons."""

    def __init__(self, config: HybridConfig | None = None) -> None:
        self.config = config or HybridConfig()
        self.content: ContentFeatures | None = None
        self.ranker: Ranker | None = None
        self.stage: Stage | None = None
        self.titles: dict[str, str] = {}
        self.cache: dict[str, pd.DataFrame] = {}
        self.exposure: np.ndarray | None = None
        self.fit_summary: dict[str, Any] = {}

    # -- training ------------------------------------------------------------------------------
    def fit(
        self,
        events: pd.DataFrame,
        items: pd.DataFrame,
        cutoff: pd.Timestamp | str | None = None,
        *,
        content: ContentFeatures | None = None,
        step: Step = _quiet,
        measure_exposure: bool = True,
    ) -> HybridRecommender:
        """Train on the events before `cutoff` (default: just after the last event).

        `step` hears what is being done (a progress line for the CLI). `measure_exposure`
        False skips scoring a sample of users for the exposure penalty (no penalty then).
        """
        step("hybrid: reading events")
        prepared = prepare_events(events, self.config.event_weights())
        if prepared.empty:
            raise DataError("no interactions to train on")
        cut = _cutoff(prepared, cutoff)
        prepared = before(prepared, cut)
        step(f"hybrid: content features of {len(items):,} items")
        self.content = content or ContentFeatures.build(
            items, embeddings=self.config.embeddings, previous=self.content
        )
        catalog = catalog_frame(items)
        self.titles = dict(zip(catalog["item_id"], catalog["title"].fillna(""), strict=True))
        frames, labels, groups = self._examples(prepared, items, cut, step)
        step(f"hybrid: training the ranker on {sum(len(f) for f in frames):,} candidates")
        self.ranker = Ranker(
            self.config.ranker_params, seed=self.config.seed, n_jobs=self.config.n_jobs
        )
        report = self.ranker.fit(
            pd.concat(frames, ignore_index=True), np.concatenate(labels), np.concatenate(groups)
        )
        step("hybrid: fitting the generators on every event")
        with threadpool_limits(self.config.n_jobs):
            self.stage = Stage(prepared, items, self.content, cut, self.config)
        self.cache = {}
        self.exposure = None
        if measure_exposure:
            step("hybrid: measuring exposure")
            self.exposure = self._exposure(prepared, cut)
        self.fit_summary = {"cutoff": cut.isoformat(), "ranker": report.__dict__}
        return self

    def _exposure(self, events: pd.DataFrame, cutoff: pd.Timestamp) -> np.ndarray:
        """Per item, the share of recently active users whose unpenalised list holds it."""
        stage, _ = self._fitted()
        since = cutoff - pd.Timedelta(days=self.config.label_days * self.config.label_windows)
        active = events.loc[(events["timestamp"] >= since) & (events["weight"] > 0), "user_id"]
        users = np.asarray(pd.unique(active.dropna()), dtype=object)
        if len(users) > EXPOSURE_USERS:
            users = np.random.default_rng(self.config.seed).choice(users, EXPOSURE_USERS, False)
        counts = np.zeros(stage.n_items, np.float64)
        if len(users):
            scored = self.score(list(users))
            picks = scored.top(EXPOSURE_K)
            counts = np.bincount(
                scored.candidates.items[picks[picks >= 0]], minlength=stage.n_items
            )
        return (counts / max(len(users), 1)).astype(np.float32)

    def _examples(
        self,
        events: pd.DataFrame,
        items: pd.DataFrame,
        cutoff: pd.Timestamp,
        step: Step = _quiet,
    ) -> tuple[list[pd.DataFrame], list[np.ndarray], list[np.ndarray]]:
        """Ranker examples from each label window: known customers as of the window start,
        and new customers as of just after their first basket in the window."""
        frames, labels, groups = [], [], []
        width = pd.Timedelta(days=self.config.label_days)
        rng = np.random.default_rng(self.config.seed)
        for window in range(self.config.label_windows):
            end = cutoff - window * width
            start = end - width
            if start <= events["timestamp"].min():
                break
            step(f"hybrid: label window {window + 1} of {self.config.label_windows}")
            with threadpool_limits(self.config.n_jobs):
                stage = Stage(events, items, self.content, start, self.config)  # type: ignore[arg-type]
            inside = events.loc[(events["timestamp"] >= start) & (events["timestamp"] < end)]
            inside = inside.loc[(inside["weight"] > 0) & inside["user_id"].notna()]
            known = inside["user_id"].isin(pd.Index(pd.unique(stage.events["user_id"].dropna())))
            for users, extra, now, later in (
                # everyone who bought in the window, as of its start (new customers too: they
                # teach the item features most); and new customers as of their first basket
                (self._sample(pd.unique(inside["user_id"]), rng), None, None, inside),
                first_baskets(inside.loc[~known]),
            ):
                if not len(users):
                    continue
                contexts = label_contexts(later, users)
                candidates, frame, _ = stage.candidates(users, extra, now, contexts)
                frames.append(frame)
                labels.append(stage.features.labels(candidates, users, later))
                groups.append(candidates.group_sizes())
        if not frames:
            raise DataError("too little history before the cutoff for one label window")
        return frames, labels, groups

    def _sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        users = np.asarray(users, dtype=object)
        cap = self.config.max_train_users
        if cap is not None and len(users) > cap:
            users = rng.choice(users, cap, replace=False)
        return users

    # -- scoring -------------------------------------------------------------------------------
    def _fitted(self) -> tuple[Stage, Ranker]:
        if self.stage is None or self.ranker is None:
            raise NotFittedError("the hybrid recommender is not fitted")
        return self.stage, self.ranker

    def score(
        self,
        user_ids: Sequence[str],
        *,
        extra_events: pd.DataFrame | None = None,
        now: RequestTime = None,
        context: RankingContext | None = None,
    ) -> Scored:
        """Every candidate of these users, scored by the ranker.

        `extra_events` (same columns as the training events) are what the users did since the
        cutoff; `now` is the request time (default: the cutoff). Events at or after `now` are
        ignored, as features must not see the future.
        """
        stage, ranker = self._fitted()
        users = np.asarray([str(u) for u in user_ids], dtype=object)
        extra = None
        if extra_events is not None and len(extra_events):
            extra = prepare_events(extra_events, self.config.event_weights())
        candidates, frame, request = stage.candidates(users, extra, now, context)
        raw = ranker.predict(frame)
        return Scored(
            users,
            candidates,
            frame,
            raw,
            ranker.probability(raw),
            request,
            self.exposure,
            self._fallback(candidates),
        )

    def _fallback(self, candidates: CandidateSet) -> np.ndarray | None:
        name = self.config.cold_start_generator
        if name is None or name not in candidates.generators:
            return None
        score = candidates.scores[:, candidates.generators.index(name)]
        return np.where(np.isnan(score), -np.inf, score)

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        extra_events: pd.DataFrame | None = None,
        now: RequestTime = None,
        context: RankingContext | None = None,
        objective: ValueObjective | None = None,
        explain: bool = False,
    ) -> pd.DataFrame:
        """The k best items per user: user_id, rank, item_id, score, probability, origin,
        sources and, with `explain`, reason and signal."""
        scored = self.score(user_ids, extra_events=extra_events, now=now, context=context)
        picks = scored.top(
            k, objective, scored.features["price"].to_numpy(), self.config.exposure_penalty
        )
        return self._frame(scored, picks, explain)

    def top_ids(self, scored: Scored, picks: np.ndarray) -> list[list[str]]:
        """Item ids of `picks` (from `Scored.top`), per user."""
        stage, _ = self._fitted()
        items = scored.candidates.items
        return [[str(stage.item_ids[items[p]]) for p in row if p >= 0] for row in picks]

    def _frame(self, scored: Scored, picks: np.ndarray, explain: bool) -> pd.DataFrame:
        stage, _ = self._fitted()
        rows, ranks = np.nonzero(picks >= 0)
        chosen = picks[rows, ranks]
        cands = scored.candidates
        origin = cands.origin()[chosen]
        picked = np.isin(np.arange(len(cands)), chosen)
        # take() keeps candidate order, so its sources line up with the sorted positions
        by_position = dict(zip(np.flatnonzero(picked), cands.take(picked).sources(), strict=True))
        out = pd.DataFrame(
            {
                "user_id": scored.user_ids[rows],
                "rank": ranks + 1,
                "item_id": stage.item_ids[cands.items[chosen]],
                "score": scored.raw[chosen],
                "probability": scored.probability[chosen],
                "origin": [cands.generators[g] for g in origin],
                "sources": [by_position[c] for c in chosen],
            }
        )
        if explain and len(chosen):
            found = self.explain(scored, chosen)
            out["reason"] = [r.text for r in found]
            out["signal"] = [r.signal for r in found]
            out["feature"] = [r.feature for r in found]
        return out

    def explain(self, scored: Scored, positions: np.ndarray) -> list[Reason]:
        """The strongest signal behind each of these candidates, in plain words."""
        _, ranker = self._fitted()
        frame = scored.features.iloc[positions]
        contributions = ranker.contributions(frame)
        facts = self._facts(scored, positions)
        cands = scored.candidates
        origins = [cands.generators[g] for g in cands.origin()[positions]]
        return reasons(contributions, ranker.features, facts, origins)

    def _facts(self, scored: Scored, positions: np.ndarray) -> list[ItemFacts]:
        stage, _ = self._fitted()
        content = self.content
        cands = scored.candidates
        anchors = self._anchors(scored, positions)
        out = []
        for p, anchor in zip(positions, anchors, strict=True):
            item = str(stage.item_ids[cands.items[p]])
            cat = brand = ""
            if content is not None and item in content.index:
                cat = str(content.category[content.index[item]])
                brand = str(content.brand[content.index[item]])
            times = float(scored.features["ui_baskets"].iloc[p])
            out.append(ItemFacts(self.titles.get(item, item), cat, brand, anchor, times))
        return out

    def _anchors(self, scored: Scored, positions: np.ndarray) -> list[str | None]:
        """Per candidate, the title of the user's recent item most similar to it."""
        stage, _ = self._fitted()
        knn = next((g.model for g in stage.generators if g.name in ("recent", "itemknn")), None)
        similarity = getattr(knn, "similarity", None)
        if similarity is None:
            return [None] * len(positions)
        request = scored.request
        source = request.recent if request.recent.nnz else request.histories
        out: list[str | None] = []
        for p in positions:
            row, item = scored.candidates.rows[p], scored.candidates.items[p]
            mine = source.indices[source.indptr[row] : source.indptr[row + 1]]
            if not len(mine):
                mine = request.histories.indices[
                    request.histories.indptr[row] : request.histories.indptr[row + 1]
                ]
            sims = np.asarray(similarity[mine, item].todense()).ravel() if len(mine) else []
            best = mine[int(np.argmax(sims))] if len(sims) and max(sims) > 0 else None
            out.append(None if best is None else self.titles.get(str(stage.item_ids[best])))
        return out

    # -- serving fast path ---------------------------------------------------------------------
    def precompute(
        self, user_ids: Sequence[str] | None = None, n: int = 50, batch: int = 2000
    ) -> int:
        """Score and keep each user's n best candidates, so `cached` answers without the ranker.

        Default users: everyone in the final stage's matrix. Returns the number of users kept.
        """
        stage, _ = self._fitted()
        users = list(stage.data.user_ids) if user_ids is None else [str(u) for u in user_ids]
        for start in range(0, len(users), batch):
            chunk = users[start : start + batch]
            scored = self.score(chunk)
            top = scored.top(n, exposure_penalty=self.config.exposure_penalty)
            frame = self._frame(scored, top, explain=False)
            for user, part in frame.groupby("user_id", sort=False):
                self.cache[str(user)] = part.reset_index(drop=True)
        return len(users)

    def cached(self, user_id: str, k: int = 10, exclude: Sequence[str] = ()) -> pd.DataFrame:
        """The precomputed best k of a user (minus `exclude`); empty when not precomputed."""
        part = self.cache.get(str(user_id))
        if part is None:
            return pd.DataFrame(columns=["user_id", "rank", "item_id", "score", "probability"])
        if exclude:
            part = part.loc[~part["item_id"].isin(list(exclude))]
        return part.head(k).assign(rank=np.arange(1, min(k, len(part)) + 1))

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """A folder: config, content features, every generator, the ranker, the events it
        needs for features, and the precomputed lists if any. No pickle."""
        stage, ranker = self._fitted()
        assert self.content is not None
        path.mkdir(parents=True, exist_ok=True)
        self.content.save(path / "content")
        ranker.save(path / "ranker")
        for generator in stage.generators:
            generator.save(path / "generators" / generator.name)
        stage.events.to_parquet(path / "events.parquet", index=False)
        if self.exposure is not None:
            np.save(path / "exposure.npy", self.exposure, allow_pickle=False)
        titles = pd.DataFrame({"item_id": list(self.titles), "title": list(self.titles.values())})
        titles.to_parquet(path / "titles.parquet", index=False)
        if self.cache:
            cache = pd.concat(self.cache.values(), ignore_index=True)
            cache["sources"] = cache["sources"].map(lambda s: ",".join(s))
            cache.to_parquet(path / "cache.parquet", index=False)
        meta = {
            "format": FORMAT_VERSION,
            "config": self.config.to_json(),
            "cutoff": stage.cutoff.isoformat(),
            "fit_summary": self.fit_summary,
        }
        atomic_write_text(path / "hybrid.json", json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, path: Path) -> HybridRecommender:
        """Read a folder written by `save`; nothing is refitted."""
        if not (path / "hybrid.json").is_file():
            raise NotFoundError(f"{path}: no saved hybrid recommender (hybrid.json missing)")
        meta = json.loads((path / "hybrid.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise DataError(f"{path}: hybrid format {meta.get('format')} cannot be read")
        hybrid = cls(HybridConfig(**meta["config"]))
        hybrid.content = ContentFeatures.load(path / "content")
        hybrid.ranker = Ranker.load(path / "ranker")
        events = pd.read_parquet(path / "events.parquet")
        stage = Stage(
            events, None, hybrid.content, pd.Timestamp(meta["cutoff"]), hybrid.config, fit=False
        )
        for generator in stage.generators:
            generator.load_state(path / "generators" / generator.name)
        hybrid.stage = stage
        if (path / "exposure.npy").is_file():
            hybrid.exposure = np.load(path / "exposure.npy", allow_pickle=False)
        titles = pd.read_parquet(path / "titles.parquet")
        hybrid.titles = dict(zip(titles["item_id"], titles["title"], strict=True))
        if (path / "cache.parquet").is_file():
            cache = pd.read_parquet(path / "cache.parquet")
            cache["sources"] = cache["sources"].str.split(",")
            hybrid.cache = {str(u): p.reset_index(drop=True) for u, p in cache.groupby("user_id")}
        hybrid.fit_summary = meta.get("fit_summary", {})
        return hybrid


def first_baskets(
    events: pd.DataFrame,
) -> tuple[np.ndarray, pd.DataFrame, list[pd.Timestamp], pd.DataFrame]:
    """Customers with at least two baskets here: their first basket, the moment just after
    it (their request time), and what they did later (their labels)."""
    first_time = events.groupby("user_id")["timestamp"].transform("min")
    first = events.loc[events["timestamp"] == first_time]
    later = events.loc[events["timestamp"] > first_time]
    users = np.asarray(pd.unique(later["user_id"]), dtype=object)
    first = first.loc[first["user_id"].isin(users)]
    now = first.groupby("user_id")["timestamp"].max() + pd.Timedelta(seconds=1)
    return users, first, list(now.reindex(users)), later


def _cutoff(events: pd.DataFrame, cutoff: pd.Timestamp | str | None) -> pd.Timestamp:
    if cutoff is None:
        return events["timestamp"].max() + pd.Timedelta(milliseconds=1)
    moment = pd.Timestamp(cutoff)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
