"""Blends of several recommenders, and the "buy it again" baseline of a user's own history.

A `Blend` adds up its members' scores after putting each on a common scale per user, since
an EASE score, an ALS dot product and a kNN similarity sum have nothing in common but their
order. With weights tuned on a validation split it is how nextbuy beats each single model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import ConfigError
from nextbuy.models.base import Recommender, TopK
from nextbuy.models.registry import create_model
from nextbuy.models.request_top import best

Normalise = Literal["zscore", "minmax", "max", "rank"]
NORMALISATIONS: tuple[str, ...] = ("zscore", "minmax", "max", "rank")
RANK_OFFSET = 60.0  # reciprocal rank fusion's k: damps the gap between the first few ranks
MemberSpec = Mapping[str, Any]  # {"model": registry name, "params": {...}}


class Blend(Recommender):
    """A weighted sum of member models' per-user normalised scores.

    `members` are unfitted or fitted `Recommender`s, or specs ``{"model": name, "params": {}}``.
    Per user and member, scores are put on one scale by `normalise`: "zscore" (minus the mean
    over recommendable items, over their standard deviation), "minmax" (0..1), "max" (divided
    by the largest absolute score) or "rank" (1 / (60 + rank), reciprocal rank fusion). An item
    a member cannot recommend (-inf) sits just below that member's lowest value for the user
    (see `normalise_rows`); an item no member can recommend stays -inf. `refit=False` keeps
    members that are already fitted on the same items (tuning the weights then costs no refit).
    """

    name = "blend"

    def __init__(
        self,
        members: Sequence[Recommender | MemberSpec] = (),
        weights: Sequence[float] | None = None,
        normalise: Normalise = "zscore",
        refit: bool = True,
    ) -> None:
        super().__init__()
        if not members:
            raise ConfigError("blend needs at least one member model")
        if normalise not in NORMALISATIONS:
            raise ConfigError(f"blend normalise must be one of {', '.join(NORMALISATIONS)}")
        self.models = [_as_model(m) for m in members]
        self.members = [{"model": m.name, "params": m.params()} for m in self.models]
        weights = [1.0] * len(self.models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.models):
            raise ConfigError(f"blend has {len(self.models)} members but {len(weights)} weights")
        if not any(weights):
            raise ConfigError("blend needs at least one nonzero weight")
        self.weights = weights
        self.normalise = normalise
        self.refit = refit

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        for model in self.models:
            if self.refit or model.item_ids is None:
                model.fit(data, items)
            elif not np.array_equal(model.item_ids, data.item_ids):
                raise ConfigError(
                    f"blend member {model.name!r} was fitted on other items; use refit=True"
                )

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._combine([m.score(histories) if w else None for w, m in self._pairs()])

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return self._combine([m._similar(items) if w else None for w, m in self._pairs()])

    def _pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Each member's pool scores, normalised over the pool (a full score normalises over
        the whole catalogue: the one approximation of the pool path)."""
        total = np.zeros(len(pool), np.float32)
        reachable = np.zeros(len(pool), bool)
        for weight, member in self._pairs():
            if not weight:
                continue
            scores = member.pool_scores(cols, vals, pool)[None, :]
            reachable |= np.isfinite(scores[0])
            total += np.float32(weight) * normalise_rows(scores, self.normalise)[0]
        total[~reachable] = -np.inf
        return total

    def keep_contiguous(self, items: np.ndarray) -> None:
        for _, member in self._pairs():
            member.keep_contiguous(items)

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        """The first weighted member that can say which history item led to a target."""
        for weight, member in self._pairs():
            found = member.contributions(hist, weights, targets) if weight else None
            if found is not None:
                return found
        return None

    def combine(self, parts: list[np.ndarray | None]) -> np.ndarray:
        """The blend of members' score matrices computed elsewhere (tuning scores each member
        once and only reweighs them per trial)."""
        return self._combine(parts)

    def _pairs(self) -> list[tuple[float, Recommender]]:
        return list(zip(self.weights, self.models, strict=True))

    def _combine(self, parts: list[np.ndarray | None]) -> np.ndarray:
        """Weighted sum of normalised parts; members of weight 0 were not scored (None)."""
        shape = next(p.shape for p in parts if p is not None)
        total = np.zeros(shape, np.float32)
        reachable = np.zeros(shape, bool)
        for weight, scores in zip(self.weights, parts, strict=True):
            if scores is None:
                continue
            reachable |= np.isfinite(scores)
            total += np.float32(weight) * normalise_rows(scores, self.normalise)
        total[~reachable] = -np.inf
        return total

    def _state(self) -> dict[str, np.ndarray]:
        state: dict[str, np.ndarray] = {}
        for i, model in enumerate(self.models):
            state.update({f"m{i}.{key}": value for key, value in model._state().items()})
        return state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        for i, model in enumerate(self.models):
            prefix = f"m{i}."
            model.item_ids = self.item_ids
            model._restore({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


class OwnHistory(Recommender):
    """What the user already has, most bought first: the "buy it again" baseline.

    score = the history weight (event count × event weight, decayed when the matrix has a
    half-life, so that recency counts there), ties broken by overall popularity. Items outside
    the history cannot be recommended: pair it with popularity to fill the list.
    """

    name = "own_history"
    baseline: ClassVar[bool] = True
    TIE_BREAK = 1e-3

    def __init__(self) -> None:
        super().__init__()
        self.popularity = np.zeros(0, np.float32)  # 0..1, share of the best seller's users

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        users = np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.float32)
        self.popularity = users / max(float(users.max(initial=0.0)), 1.0)

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """Only the row's own items can score."""
        items = row.indices.astype(np.int64)
        mine = row.data > 0
        if blocked is not None:
            mine &= ~blocked[items]
        items = items[mine]
        scores = row.data[mine].astype(np.float32) + (self.TIE_BREAK * self.popularity)[items]
        return best(items, scores.astype(np.float32), n)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        dense = histories.toarray()
        scores = np.where(dense > 0, dense + self.TIE_BREAK * self.popularity, -np.inf)
        return scores.astype(np.float32)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        # an item's own history is itself, which similar_items never returns
        return np.full((len(items), self.n_items), -np.inf, np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"popularity": self.popularity}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.popularity = state["popularity"]


def normalise_rows(scores: np.ndarray, how: str) -> np.ndarray:
    """Each row on a common scale over its finite entries.

    An item the model cannot recommend (-inf) sits one unit below the row's lowest finite
    value (0 under "rank", where every finite value is positive), so that it never ties with
    a recommendable one; rows with nothing finite are all 0 (no opinion).
    """
    if how not in NORMALISATIONS:
        raise ConfigError(f"unknown normalisation {how!r}")
    finite = np.isfinite(scores)
    if how == "rank":
        return np.where(finite, _reciprocal_rank(scores), 0.0).astype(np.float32)
    values = np.where(finite, scores, 0.0).astype(np.float32)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1).astype(np.float32)
    low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    if how == "zscore":
        mean = values.sum(axis=1, keepdims=True) / count
        centred = np.where(finite, values - mean, 0.0)
        std = np.sqrt((centred * centred).sum(axis=1, keepdims=True) / count)
        out = centred / np.where(std > 0, std, 1.0)
    elif how == "minmax":
        span = high - low
        out = (values - low) / np.where(span > 0, span, 1.0)
    else:  # "max"
        top = np.maximum(np.abs(low), np.abs(high))
        out = values / np.where(top > 0, top, 1.0)
    # rows without a finite value have low = inf: their floor is never used
    floor = np.where(finite, out, np.inf).min(axis=1, keepdims=True) - 1.0
    out = np.where(finite, out, floor)
    out[~finite.any(axis=1)] = 0.0
    return out.astype(np.float32, copy=False)


def _reciprocal_rank(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return 1.0 / (RANK_OFFSET + 1.0 + ranks)


def _as_model(member: Recommender | MemberSpec) -> Recommender:
    if isinstance(member, Recommender):
        return member
    if not isinstance(member, Mapping) or "model" not in member:
        raise ConfigError("blend member must be a model or {'model': name, 'params': {}}")
    return create_model(str(member["model"]), **dict(member.get("params") or {}))
