"""Scoring one history row at request time, and which history item explains a recommendation.

All indices here are the model's item indices (columns of the training matrix).
"""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp

from nextbuy.models import EASE, Blend, FrequentlyBoughtTogether, ItemKNN, Recommender
from nextbuy.models.mf import _FactorModel

_UNIT_FACTORS: weakref.WeakKeyDictionary[_FactorModel, np.ndarray] = weakref.WeakKeyDictionary()


def unit_factors(model: _FactorModel) -> np.ndarray:
    """Item factors scaled to length 1, once per loaded model (requests compare them)."""
    found = _UNIT_FACTORS.get(model)
    if found is None:
        emb = model._embeddings()
        norms = np.linalg.norm(emb, axis=1)
        found = (emb / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32)
        _UNIT_FACTORS[model] = found
    return found


def history_row(n_items: int, cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
    """A 1 × n_items CSR row; repeated columns are summed."""
    row = sp.csr_matrix(
        (vals.astype(np.float32), (np.zeros(len(cols), np.int64), cols.astype(np.int64))),
        shape=(1, n_items),
    )
    row.sum_duplicates()
    return row


def top_for_history(
    model: Recommender,
    cols: np.ndarray,
    vals: np.ndarray,
    n: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The n best (items, scores) for one history, best first; never an excluded item."""
    if not len(cols):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = model.score(history_row(model.n_items, cols, vals))[0]
    if exclude is not None and len(exclude):
        scores[exclude] = -np.inf
    return best_of(scores, n)


def best_of(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the n highest finite scores of a vector, best first."""
    n = min(n, len(scores))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    picked = scores[part]
    order = np.lexsort((part, -picked))
    items, best = part[order].astype(np.int64), picked[order].astype(np.float32)
    finite = np.isfinite(best)
    return items[finite], best[finite]


def score_items(
    model: Recommender, cols: np.ndarray, vals: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """Scores of exactly these items for one history (-inf where the model cannot score)."""
    if not len(cols):
        return np.full(len(items), -np.inf, np.float32)
    scores = model.score(history_row(model.n_items, cols, vals))[0]
    return scores[items].astype(np.float32)


def contributions(
    model: Recommender,
    hist: np.ndarray,
    weights: np.ndarray,
    targets: np.ndarray,
    ease_position: np.ndarray | None = None,
) -> np.ndarray | None:
    """(len(targets), len(hist)): how much each history item adds to each target's score.

    Exact for the linear item-item models (EASE, item kNN, fbt); for factor models the
    cosine of item factors. None when the model has no notion of item-to-item influence.
    """
    if not len(hist) or not len(targets):
        return None
    if isinstance(model, Blend):
        # the first member that can say which history item led to a target explains the blend
        for weight, member in zip(model.weights, model.models, strict=True):
            found = contributions(member, hist, weights, targets) if weight else None
            if found is not None:
                return found
        return None
    if isinstance(model, EASE):
        position = ease_position if ease_position is not None else model.positions()
        rows, cols = position[hist], position[targets]
        if (rows >= 0).all() and (cols >= 0).all():  # the usual case: no pruned items
            return (model.weights[rows[:, None], cols[None, :]].T * weights).astype(np.float32)
        out = np.zeros((len(targets), len(hist)), np.float32)
        ok_r, ok_c = rows >= 0, cols >= 0
        if ok_r.any() and ok_c.any():
            block = model.weights[rows[ok_r][:, None], cols[ok_c][None, :]].T
            out[np.ix_(ok_c, ok_r)] = block * weights[ok_r]
        return out
    if isinstance(model, ItemKNN):
        block = model.similarity[hist][:, targets].toarray().T
        return (block * weights).astype(np.float32)
    if isinstance(model, FrequentlyBoughtTogether):
        return model._metric[hist][:, targets].toarray().T.astype(np.float32)
    if isinstance(model, _FactorModel):
        unit = unit_factors(model)
        return unit[targets] @ unit[hist].T
    return None
