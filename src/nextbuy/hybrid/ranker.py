"""The learning-to-rank stage: LightGBM LambdaMART over the candidates' features.

Trained on query groups (one per user) that hold at least one positive; a share of the users
is held out for early stopping, and a logistic calibration of the raw scores on those users
turns a ranker score into a probability of purchase (which the business objective needs).
The model is saved as LightGBM's own text format, never pickled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

from nextbuy.data.files import atomic_write_text
from nextbuy.errors import DataError, NotFittedError, NotFoundError

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "n_estimators": 400,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    "lambdarank_truncation_level": 20,
    "verbosity": -1,
}
# Objectives that score rows one by one (the group only feeds the NDCG shown in the report).
POINTWISE_OBJECTIVES = frozenset({"binary", "cross_entropy", "xentropy", "regression"})


@dataclass
class RankerFit:
    """How training went: sizes, rounds and the held-out NDCG LightGBM reported."""

    groups: int
    rows: int
    positives: int
    best_iteration: int
    valid_ndcg_at_10: float | None
    importance: dict[str, float] = field(default_factory=dict)


class Ranker:
    """LGBMRanker(objective="lambdarank") with early stopping and a probability calibration."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        *,
        valid_share: float = 0.15,
        early_stopping_rounds: int = 40,
        seed: int = 0,
        n_jobs: int = 2,
    ) -> None:
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.valid_share = valid_share
        self.early_stopping_rounds = early_stopping_rounds
        self.seed = seed
        self.n_jobs = n_jobs
        self.booster: lightgbm.Booster | None = None
        self.features: list[str] = []
        self.calibration = (1.0, 0.0)  # p = sigmoid(a × score + b)
        self.report: RankerFit | None = None

    def fit(
        self,
        features: pd.DataFrame,
        labels: np.ndarray,
        groups: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> RankerFit:
        """Train on rows ordered by group; `groups` are the group sizes in that order.

        `weights` (one per row, e.g. inverse-propensity weights of logged clicks) scale each
        row's gradient; LightGBM applies them per row under lambdarank too, after a list's
        pairwise lambdas are summed."""
        groups = np.asarray(groups, np.int64)
        if groups.sum() != len(features) or len(labels) != len(features):
            raise DataError("ranker rows, labels and group sizes disagree")
        if weights is not None and len(weights) != len(features):
            raise DataError("ranker rows and weights disagree")
        keep_group = _informative_groups(labels, groups, self.params["objective"])
        rows = np.isin(np.repeat(np.arange(len(groups)), groups), keep_group)
        x = features.iloc[np.flatnonzero(rows)].reset_index(drop=True)
        y, g = np.asarray(labels)[rows], groups[keep_group]
        if len(g) < 2 or y.sum() == 0:
            raise DataError("the ranker needs at least two users with a purchase in its window")
        valid = np.random.default_rng(self.seed).random(len(g)) < self.valid_share
        valid_rows = np.repeat(valid, g)
        w = None if weights is None else np.asarray(weights, np.float64)[rows]
        model = lightgbm.LGBMRanker(**self.params, random_state=self.seed, n_jobs=self.n_jobs)
        model.fit(
            x.loc[~valid_rows],
            y[~valid_rows],
            sample_weight=None if w is None else w[~valid_rows],
            group=g[~valid],
            eval_X=(x.loc[valid_rows],),
            eval_y=(y[valid_rows],),
            eval_sample_weight=None if w is None else [w[valid_rows]],
            eval_group=[g[valid]],
            eval_at=[10],
            callbacks=[lightgbm.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        self.booster = model.booster_
        self.features = list(x.columns)
        raw = self.booster.predict(x.loc[valid_rows], num_iteration=self._best())
        self.calibration = _platt(raw, y[valid_rows])
        score = model.best_score_.get("valid_0", {}).get("ndcg@10")
        gain = self.booster.feature_importance("gain")
        self.report = RankerFit(
            groups=len(g),
            rows=len(y),
            positives=int(y.sum()),
            best_iteration=self._best(),
            valid_ndcg_at_10=None if score is None else float(score),
            importance=dict(
                sorted(
                    zip(self.features, (gain / max(gain.sum(), 1e-12)).tolist(), strict=True),
                    key=lambda kv: -kv[1],
                )
            ),
        )
        return self.report

    def _best(self) -> int:
        assert self.booster is not None
        best = self.booster.best_iteration
        return int(best) if best and best > 0 else int(self.booster.current_iteration())

    def _matrix(self, features: pd.DataFrame) -> pd.DataFrame:
        if self.booster is None:
            raise NotFittedError("the ranker is not trained")
        return features[self.features]

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Raw LambdaMART scores (higher is better; only their order within a user matters)."""
        if not len(features):
            return np.zeros(0, np.float64)
        assert self.booster is not None
        return self.booster.predict(self._matrix(features), num_iteration=self._best())

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated P(purchase) for raw scores."""
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * raw + b)))

    def contributions(self, features: pd.DataFrame) -> np.ndarray:
        """SHAP values per feature (n, n_features); the last column of LightGBM's is the bias."""
        assert self.booster is not None
        out = self.booster.predict(
            self._matrix(features), num_iteration=self._best(), pred_contrib=True
        )
        return np.asarray(out)[:, :-1]

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        if self.booster is None:
            raise NotFittedError("the ranker is not trained; nothing to save")
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "ranker.txt", self.booster.model_to_string())
        meta = {
            "params": self.params,
            "features": self.features,
            "calibration": list(self.calibration),
            "best_iteration": self._best(),
            "report": None if self.report is None else self.report.__dict__,
        }
        atomic_write_text(path / "ranker.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> Ranker:
        if not (path / "ranker.txt").is_file():
            raise NotFoundError(f"{path}: no saved ranker (ranker.txt missing)")
        meta = json.loads((path / "ranker.json").read_text(encoding="utf-8"))
        ranker = cls(meta["params"])
        ranker.booster = lightgbm.Booster(model_str=(path / "ranker.txt").read_text("utf-8"))
        ranker.booster.best_iteration = int(meta["best_iteration"])
        ranker.features = list(meta["features"])
        ranker.calibration = (float(meta["calibration"][0]), float(meta["calibration"][1]))
        if meta.get("report"):
            ranker.report = RankerFit(**meta["report"])
        return ranker


def _informative_groups(labels: np.ndarray, groups: np.ndarray, objective: str) -> np.ndarray:
    """Indices of the groups that teach the objective: under a ranking objective a group
    without a positive has no pair to learn from; a pointwise one learns from its negatives."""
    if objective in POINTWISE_OBJECTIVES:
        return np.flatnonzero(groups > 0)
    return _positive_groups(labels, groups)


def _positive_groups(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Indices of the groups with at least one positive label (the others teach nothing)."""
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    nonempty = groups > 0
    positives = np.zeros(len(groups))
    positives[nonempty] = np.add.reduceat(labels, starts[nonempty])
    return np.flatnonzero(positives > 0)


def _platt(raw: np.ndarray, labels: Sequence[int]) -> tuple[float, float]:
    """Logistic regression of labels on the raw score: p = sigmoid(a × raw + b)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    model = LogisticRegression(C=100.0).fit(raw.reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])
