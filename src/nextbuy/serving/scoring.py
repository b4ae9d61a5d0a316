"""Scoring one history row at request time.

All indices here are the model's item indices (columns of the training matrix).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from nextbuy.models import Recommender


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
