"""Frequently bought together: item pairs that share baskets (orders, or sessions).

For items i and j in N baskets: support(i, j) = baskets holding both, confidence(i → j) =
support / baskets holding i, lift(i → j) = confidence × N / baskets holding j. Confidence
favours best sellers (they are in every basket); lift divides their popularity out, so a
true complement outranks an item that is everyone's complement. A cart's score for j is the
sum of the chosen metric over the cart's items.

A pair seen together twice can have a huge lift by chance, so the metric used for ranking
is shrunk by its evidence: metric × support / (support + shrinkage). With shrinkage → ∞ the
ranking tends to support² / (support_i × support_j), a squared cosine; with 0 it is the raw
metric. Held-out basket completion (one item hidden per order, hit@10) on UCI Online Retail
went 0.09 → 0.20 → 0.29 for shrinkage 0, 10, 100; `pairs()` reports the raw statistics.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.files import pack_csr, unpack_csr
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import ConfigError, DataError, NotFoundError
from nextbuy.models.base import Recommender, sparse_pool_scores, sparse_scores

Metric = Literal["lift", "confidence"]
ROWS_PER_BLOCK = 512  # items whose co-occurrence rows are built at once


class FrequentlyBoughtTogether(Recommender):
    """Pair statistics over baskets; keeps per item the `neighbours` best partners."""

    name = "fbt"

    def __init__(
        self,
        min_support: int = 2,
        metric: Metric = "lift",
        neighbours: int = 100,
        shrinkage: float = 100.0,
    ) -> None:
        super().__init__()
        if metric not in ("lift", "confidence"):
            raise ConfigError(f"fbt metric must be lift or confidence, not {metric!r}")
        if min_support < 1 or neighbours < 1 or shrinkage < 0:
            raise ConfigError("fbt needs min_support >= 1, neighbours >= 1 and shrinkage >= 0")
        self.min_support = min_support
        self.metric = metric
        self.neighbours = neighbours
        self.shrinkage = shrinkage
        self.support = sp.csr_matrix((0, 0), dtype=np.float32)  # pair counts, kept pairs only
        self.item_support = np.zeros(0, np.float32)  # baskets holding each item
        self.n_baskets = 0
        self._metric = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        baskets = data.baskets
        if baskets is None or baskets.shape[0] == 0:
            raise DataError("fbt needs baskets: interactions with an order_id or session_id")
        baskets = sp.csr_matrix(baskets, dtype=np.float32)
        baskets.data[:] = 1.0
        self.n_baskets = int(baskets.shape[0])
        self.item_support = np.asarray(baskets.sum(axis=0), np.float32).ravel()
        item_baskets = sp.csr_matrix(baskets.T)
        blocks = [
            self._pairs_block(item_baskets[start : start + ROWS_PER_BLOCK], start, baskets)
            for start in range(0, item_baskets.shape[0], ROWS_PER_BLOCK)
        ]
        self.support = sp.csr_matrix(sp.vstack(blocks), dtype=np.float32)
        self._metric = self._metric_matrix()

    def _pairs_block(
        self, rows: sp.csr_matrix, start: int, baskets: sp.csr_matrix
    ) -> sp.csr_matrix:
        """Co-support of a block of items with every item, pruned to the best partners."""
        co = sp.csr_matrix(rows @ baskets)
        co = co.tocoo()
        keep = (co.data >= self.min_support) & (co.row + start != co.col)
        row, col, count = co.row[keep], co.col[keep], co.data[keep]
        value = self._metric_values(row + start, col, count)
        # Rank partners within each row by the metric, best first, and keep the top ones.
        order = np.lexsort((col, -value, row))
        row, col, count = row[order], col[order], count[order]
        first = np.searchsorted(row, row, side="left")
        keep = (np.arange(len(row)) - first) < self.neighbours
        return sp.csr_matrix((count[keep], (row[keep], col[keep])), shape=co.shape)

    def _metric_values(self, i: np.ndarray, j: np.ndarray, count: np.ndarray) -> np.ndarray:
        """The ranking metric of pairs i → j, shrunk by their support."""
        count = count.astype(np.float64)
        value = count / self.item_support[i]
        if self.metric == "lift":
            value = value * self.n_baskets / self.item_support[j]
        return (value * count / (count + self.shrinkage)).astype(np.float32)

    def _metric_matrix(self) -> sp.csr_matrix:
        coo = self.support.tocoo()
        values = self._metric_values(coo.row, coo.col, coo.data)
        return sp.csr_matrix((values, (coo.row, coo.col)), shape=self.support.shape)

    def pairs(self, item: int | str, k: int = 10) -> pd.DataFrame:
        """The best k partners of one item: item id, support, confidence, lift."""
        index = self._index(item)
        row = self.support[index].tocoo()
        count, col = row.data.astype(np.float64), row.col
        frame = pd.DataFrame(
            {
                "item": [str(self.item_ids[c]) for c in col],  # type: ignore[index]
                "support": count.astype(np.int64),
                "confidence": count / self.item_support[index],
                "lift": count / self.item_support[index] * self.n_baskets / self.item_support[col],
            }
        )
        return (
            frame.sort_values([self.metric, "item"], ascending=[False, True])
            .head(k)
            .reset_index(drop=True)
        )

    def _index(self, item: int | str) -> int:
        if isinstance(item, str):
            where = np.flatnonzero(self.item_ids == item)
            if not len(where):
                raise NotFoundError(f"item {item!r} is not known to the model")
            return int(where[0])
        if not 0 <= int(item) < self.n_items:
            raise NotFoundError(f"item index {item} out of range 0..{self.n_items - 1}")
        return int(item)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        in_cart = histories.copy()
        in_cart.data = (in_cart.data > 0).astype(np.float32)
        return sparse_scores(in_cart @ self._metric)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return sparse_scores(self._metric[items])

    def _pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        # a basket counts each item once, whatever its weight
        return sparse_pool_scores(self._metric, (vals > 0).astype(np.float64), cols, pool)

    def basket_model(self) -> FrequentlyBoughtTogether:
        return self

    def partners(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n best basket partners of `item`, best first: its sparse row, sorted."""
        metric = self._metric
        lo, hi = metric.indptr[item], metric.indptr[item + 1]
        items, scores = metric.indices[lo:hi].astype(np.int64), metric.data[lo:hi]
        keep = items != item
        items, scores = items[keep], scores[keep]
        order = np.lexsort((items, -scores))[:n]
        return items[order], scores[order].astype(np.float32)

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        """The association of each history item with each target (weights do not scale it:
        a basket counts each item once)."""
        if not len(hist) or not len(targets):
            return None
        return self._metric[hist][:, targets].toarray().T.astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            **pack_csr("support", self.support),
            "item_support": self.item_support,
            "n_baskets": np.asarray(self.n_baskets, np.int64),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.support = unpack_csr("support", state)
        self.item_support = state["item_support"]
        self.n_baskets = int(state["n_baskets"])
        self._metric = self._metric_matrix()
