"""Item-to-item nearest neighbours: "customers who viewed or bought this also bought".

The item-item similarity comes from implicit's all-pairs kNN over weighted item vectors
(cosine, TF-IDF or BM25 weighting); a user's score is `history @ similarity`, so any history
row, including one with events since training, can be scored.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.nearest_neighbours import ItemItemRecommender, bm25_weight, tfidf_weight

from nextbuy.data.files import pack_csr, unpack_csr
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import ConfigError
from nextbuy.models.base import (
    Recommender,
    TopK,
    accumulate,
    entries,
    sparse_pool_scores,
    sparse_scores,
)
from nextbuy.models.request_top import best

Weighting = Literal["bm25", "tfidf", "none"]


class ItemKNN(Recommender):
    """Item kNN keeping `neighbours` most similar items per item.

    weighting "none" is plain cosine; "tfidf" down-weights heavy users before the cosine;
    "bm25" (parameters k1, b) saturates repeated events and normalises for history length.
    `shrink` (cosine and tfidf) divides by sqrt(|x_i|² + shrink) instead of |x_i|, so items
    seen by few users need more evidence before they look similar to anything. Items no
    neighbour of the history reaches score -inf.
    """

    name = "itemknn"

    def __init__(
        self,
        neighbours: int = 100,
        weighting: Weighting = "bm25",
        shrink: float = 0.0,
        k1: float = 1.2,
        b: float = 0.75,
        num_threads: int = 0,
    ) -> None:
        super().__init__()
        if weighting not in ("bm25", "tfidf", "none"):
            raise ConfigError(f"itemknn weighting must be bm25, tfidf or none, not {weighting!r}")
        if weighting == "bm25" and shrink:
            raise ConfigError("itemknn shrink applies to cosine and tfidf weighting, not bm25")
        if neighbours < 1 or shrink < 0:
            raise ConfigError("itemknn needs neighbours >= 1 and shrink >= 0")
        self.neighbours = neighbours
        self.weighting = weighting
        self.shrink = shrink
        self.k1 = k1
        self.b = b
        self.num_threads = num_threads
        self.similarity = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        knn = ItemItemRecommender(K=self.neighbours + 1, num_threads=self.num_threads)
        knn.fit(self._item_vectors(data.matrix), show_progress=False)
        similarity = sp.csr_matrix(knn.similarity, dtype=np.float32)
        # An item is trivially its own nearest neighbour; drop it so the K are others.
        similarity.setdiag(0)
        similarity.eliminate_zeros()
        self.similarity = similarity

    def _item_vectors(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        """Users × items, weighted so that a dot product of columns is the similarity."""
        item_users = sp.csr_matrix(user_items.T, dtype=np.float64)
        # implicit's weightings take rows as documents (items) and columns as terms (users)
        if self.weighting == "bm25":
            return sp.csr_matrix(bm25_weight(item_users, self.k1, self.b).T)
        if self.weighting == "tfidf":
            item_users = sp.csr_matrix(tfidf_weight(item_users))
        squares = np.asarray(item_users.multiply(item_users).sum(axis=1)).ravel()
        with np.errstate(divide="ignore"):
            scale = 1.0 / np.sqrt(squares + self.shrink)
        scale[~np.isfinite(scale)] = 0.0
        return sp.csr_matrix((sp.diags(scale) @ item_users).T)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        return sparse_scores(histories @ self.similarity)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return sparse_scores(self.similarity[items])

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """Only items a history item is similar to can score."""
        at, items, values = entries(self.similarity, row.indices)
        touched = accumulate(self.n_items, items, row.data[at], values)
        reached = np.zeros(self.n_items, bool)
        reached[items] = True  # a mask beats np.unique for a heavy history's many entries
        if blocked is not None:
            reached &= ~blocked
        found = np.flatnonzero(reached)
        return best(found, touched[found], n)

    def _pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        return sparse_pool_scores(self.similarity, vals, cols, pool)

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        """Exact: similarity[h, t] × the history weight."""
        if not len(hist) or not len(targets):
            return None
        block = self.similarity[hist][:, targets].toarray().T
        return (block * weights).astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return pack_csr("similarity", self.similarity)

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.similarity = unpack_csr("similarity", state)
