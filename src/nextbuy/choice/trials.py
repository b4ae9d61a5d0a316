"""Fit a candidate on the events before the validation window, score its lists on the window.

Lists are scored under the protocols the choice needs: "discovery" (a customer's earlier
items are neither listed nor counted) and, for shops that buy again, "repeat" (nothing
excluded, every purchase counts). One fitted model is scored under both, so a trial costs one
fit. Setups are built once per training matrix (decay, event weights, rating values).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.choice.candidate import DEFAULT_WEIGHTS, Candidate
from nextbuy.data.matrix import InteractionMatrix, RatingValues, from_frame
from nextbuy.errors import NextbuyError
from nextbuy.evaluation import metrics
from nextbuy.evaluation.setup import EvaluationSetup, prepare, recommend_lists
from nextbuy.models import Recommender, create_model

K = 10
HEADLINE = "ndcg@10"


@dataclass
class Trial:
    """One candidate's validation scores per protocol, and what it cost."""

    candidate: Candidate
    stage: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    fit_seconds: float = math.nan
    score_seconds: float = math.nan
    error: str | None = None
    # NDCG@10 of each validation customer, per protocol (for the gate; not saved)
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def value(self, protocol: str) -> float:
        """NDCG@10 under `protocol`; -inf when the trial failed or was not scored there."""
        return self.scores.get(protocol, {}).get(HEADLINE, -math.inf)

    @property
    def seconds(self) -> float:
        return _zero_nan(self.fit_seconds) + _zero_nan(self.score_seconds)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_json(),
            "label": self.candidate.label(),
            "matrix": self.candidate.matrix_label(),
            "stage": self.stage,
            "baseline": self.candidate.baseline,
            "scores": self.scores,
            "fit_seconds": _finite_or_none(self.fit_seconds),
            "score_seconds": _finite_or_none(self.score_seconds),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Trial:
        return cls(
            candidate=Candidate.from_json(data["candidate"]),
            stage=str(data.get("stage", "")),
            scores={p: dict(v) for p, v in (data.get("scores") or {}).items()},
            fit_seconds=_nan_if_none(data.get("fit_seconds")),
            score_seconds=_nan_if_none(data.get("score_seconds")),
            error=data.get("error"),
        )


class Validation:
    """The window held out by `nextbuy train`, and the scoring of candidates on it.

    Who is scored, on what truth, and what counts as already seen are fixed once per protocol
    (with the default event weights), so that candidates with other weights or decay are
    scored on the same lists of purchases; only the matrix they learn from differs.
    """

    def __init__(
        self,
        train: pd.DataFrame,
        validation: pd.DataFrame,
        items: pd.DataFrame | None,
        weights: Mapping[str, Mapping[str, float]],
        target: Sequence[str],
        protocols: Sequence[str],
        rating_scale: tuple[float, float] | None = None,
    ) -> None:
        self.train, self.validation, self.items = train, validation, items
        self.weights = {name: dict(w) for name, w in weights.items()}
        self.target = list(target)
        self.protocols = tuple(protocols)
        self.rating_scale = rating_scale or (1.0, 5.0)
        self._matrices: dict[tuple[Any, ...], InteractionMatrix] = {}
        self._setups: dict[tuple[Any, ...], EvaluationSetup] = {}
        self.reference = self._references()

    def _references(self) -> dict[str, EvaluationSetup]:
        out: dict[str, EvaluationSetup] = {}
        data = None
        for protocol in self.protocols:
            out[protocol] = prepare(
                self.train,
                self.validation,
                protocol,  # type: ignore[arg-type]
                weights=self.weights[DEFAULT_WEIGHTS],
                relevant_events=self.target,
                data=data,
            )
            data = out[protocol].data
        return out

    def ratings(self, candidate: Candidate) -> RatingValues:
        return RatingValues(candidate.ratings, *self.rating_scale)

    def matrix(self, candidate: Candidate) -> InteractionMatrix:
        key = candidate.matrix_key
        if key not in self._matrices:
            self._matrices[key] = from_frame(
                self.train,
                self.weights[candidate.weights],
                candidate.half_life_days,
                ratings=self.ratings(candidate),
            )
        return self._matrices[key]

    def setup(self, candidate: Candidate, protocol: str) -> EvaluationSetup:
        """The protocol's users, truth and exclusions with this candidate's matrix."""
        key = (*candidate.matrix_key, protocol)
        if key not in self._setups:
            reference = self.reference[protocol]
            data = self.matrix(candidate)
            self._setups[key] = replace(
                reference, data=data, histories=data.rows(list(reference.user_ids))
            )
        return self._setups[key]

    def run(
        self, candidate: Candidate, stage: str, protocols: Sequence[str] | None = None
    ) -> tuple[Trial, Recommender | None]:
        """Fit on the training part, score under each protocol; a model that cannot fit
        these data gives a trial with its error."""
        protocols = tuple(protocols or self.protocols)
        started = time.perf_counter()
        try:
            model = self.fit(candidate)
        except NextbuyError as exc:
            return Trial(candidate, stage, error=str(exc)), None
        except (ValueError, ArithmeticError, MemoryError) as exc:
            # a family that breaks on these data must not stop the others; the leaderboard
            # shows why it could not be scored
            return Trial(candidate, stage, error=f"{type(exc).__name__}: {exc}"), None
        fitted = time.perf_counter()
        trial = Trial(candidate, stage, fit_seconds=fitted - started)
        self._score_all(trial, model, protocols)
        trial.score_seconds = time.perf_counter() - fitted
        return trial, model

    def _score_all(self, trial: Trial, model: Recommender, protocols: Sequence[str]) -> None:
        for protocol in protocols:
            setup = self.setup(trial.candidate, protocol)
            top, _ = recommend_lists(model, setup, K)
            trial.scores[protocol], trial.per_user[protocol] = score_lists(top, setup)

    def run_fitted(self, model: Recommender, candidate: Candidate, stage: str) -> Trial:
        """Score a model already fitted on this candidate's matrix (a blend of members)."""
        started = time.perf_counter()
        model.fit(self.matrix(candidate), self.items)
        fitted = time.perf_counter()
        trial = Trial(candidate, stage, fit_seconds=fitted - started)
        self._score_all(trial, model, self.protocols)
        trial.score_seconds = time.perf_counter() - fitted
        return trial

    @property
    def in_force(self) -> str:
        """The protocol lists are chosen on: repeat-aware when it is scored at all."""
        return self.protocols[-1]

    def fit(self, candidate: Candidate) -> Recommender:
        model = create_model(candidate.model, **dict(candidate.params))
        if model.needs_events:
            weights = self.weights[candidate.weights]
            discovery = self.in_force == "discovery"
            model.fit_events(self.train, self.items, weights, discovery)  # type: ignore[attr-defined]
            return model
        return model.fit(self.matrix(candidate), self.items)


def score_lists(top: np.ndarray, setup: EvaluationSetup) -> tuple[dict[str, float], np.ndarray]:
    """NDCG, recall and hit rate at 10 and the catalogue coverage of these lists, and each
    customer's NDCG@10."""
    per_user = metrics.ranking_metrics(top[:, :K], setup.truth, (K,))
    means = metrics.summarise(per_user)
    scores = {
        HEADLINE: means[f"ndcg@{K}"],
        f"recall@{K}": means[f"recall@{K}"],
        f"hit_rate@{K}": means[f"hit_rate@{K}"],
        f"coverage@{K}": metrics.catalog_coverage(top[:, :K], setup.data.n_items),
        "users": float(setup.n_users),
    }
    return scores, np.asarray(per_user[f"ndcg@{K}"], np.float32)


def _zero_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)
