"""EASE^R (Steck, 2019): a closed-form item-item linear model.

B = I - P / diag(P) with P = (XᵀX + λI)⁻¹ and diag(B) = 0; a user's scores are
`history @ B`. B is dense: n_items² float32 numbers, 1.6 GB for 20,000 items, and the
inverse takes O(n_items³) time. Above `max_items` the model refuses to fit unless
`prune_items` is set; it then keeps the `max_items` items with the most users and scores
the others -inf.

`side_weight` γ > 0 lets the catalogue in ("collective" EASE): each attribute value shared by
at least two items (every level of the category path, the brand, the values of list
attributes such as genres or tags, scalar attributes such as a release date) acts as a
pseudo-user who took every item carrying it, adding γ²·AAᵀ to XᵀX. Items that share
attributes then borrow strength from one another, which helps the rarely bought ones. On
MovieLens 100k (genres and release dates), tuned on validation, NDCG@10 went from 0.480 to
0.485 on the per-user split; on the per-item split validation chose λ=1590, γ=2.6, which
transferred badly (0.481 to 0.476; BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from nextbuy.data.catalog_text import catalog_frame
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.data.schema import category_levels
from nextbuy.errors import ConfigError, DataError
from nextbuy.models.base import ModelFitError, Recommender, TopK, mask_empty, top_k
from nextbuy.models.request_top import nothing

BLOCK = 1024  # columns of XᵀX filled per sparse product, rows copied per step


class EASE(Recommender):
    """EASE^R with L2 regularisation `reg` (λ)."""

    name = "ease"

    def __init__(
        self,
        reg: float = 500.0,
        max_items: int = 20_000,
        prune_items: bool = False,
        side_weight: float = 0.0,
    ):
        super().__init__()
        if reg <= 0 or max_items < 1 or side_weight < 0:
            raise ConfigError("ease needs reg > 0, max_items >= 1 and side_weight >= 0")
        self.reg = reg
        self.max_items = max_items
        self.prune_items = prune_items
        self.side_weight = side_weight
        self.kept = np.zeros(0, np.int64)  # model item index of each row/column of B
        self.weights = np.zeros((0, 0), np.float32)  # B over the kept items

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        users_per_item = np.bincount(data.matrix.indices, minlength=data.n_items)
        trained = np.flatnonzero(users_per_item > 0)
        if len(trained) > self.max_items:
            if not self.prune_items:
                gb = len(trained) ** 2 * 4 / 1e9
                raise ConfigError(
                    f"ease holds a dense items × items matrix: {len(trained):,} items need "
                    f"{gb:.1f} GB, above max_items={self.max_items:,}; set prune_items=True to "
                    f"keep the {self.max_items:,} most popular items, or raise max_items"
                )
            by_popularity = np.argsort(-users_per_item[trained], kind="stable")
            trained = np.sort(trained[by_popularity[: self.max_items]])
        self.kept = trained.astype(np.int64)
        side = None
        if self.side_weight > 0:
            if items is None:
                raise DataError("ease with side_weight > 0 needs the items table (category, ...)")
            kept_ids = np.asarray(data.item_ids, dtype=object)[self.kept]
            side = self.side_weight * item_attributes(items, kept_ids)
        self.weights = _ease_weights(sp.csc_matrix(data.matrix[:, self.kept]), self.reg, side)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        # sorted: the sums add in one order whichever way the rows were built
        histories = histories.sorted_indices()
        if len(self.kept) == self.n_items:  # nothing pruned: skip the column gather
            return mask_empty(np.asarray(histories @ self.weights, np.float32), histories)
        scores = np.full((histories.shape[0], self.n_items), -np.inf, np.float32)
        scores[:, self.kept] = histories[:, self.kept] @ self.weights
        return mask_empty(scores, histories)

    def positions(self) -> np.ndarray:
        """Row of B for each model item, -1 for items EASE pruned."""
        position = np.full(self.n_items, -1, np.int64)
        position[self.kept] = np.arange(len(self.kept))
        return position

    def _similar(self, items: np.ndarray) -> np.ndarray:
        position = self.positions()
        scores = np.full((len(items), self.n_items), -np.inf, np.float32)
        known = position[items] >= 0
        block = scores[known]
        block[:, self.kept] = self.weights[position[items[known]]]
        scores[known] = block
        return scores

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """The same CSR × dense kernel as `_score`, on the row's kept columns only."""
        kept = self.kept
        if not row.nnz or not len(kept):
            return nothing(n)
        at = self.row_positions[row.indices]
        inside = at >= 0
        sub = sp.csr_matrix(
            (row.data[inside], at[inside].astype(np.int32), np.asarray([0, inside.sum()])),
            shape=(1, len(kept)),
        )
        scores = np.asarray(sub @ self.weights, np.float32).ravel()
        if blocked is not None:
            scores[blocked[kept]] = -np.inf
        top = top_k(scores[None, :], n)
        return TopK(np.where(top.items >= 0, kept[np.maximum(top.items, 0)], -1), top.scores)

    def _pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """The pool's columns of B only."""
        rows, targets = self.row_positions[cols], self.row_positions[pool]
        known = rows >= 0
        out = np.full(len(pool), -np.inf, np.float32)
        inside = targets >= 0
        if known.any() and inside.any():
            # history × B through a sparse row: h × n multiply-adds and no h × n copy
            # (a 2-D gather of h × pool entries costs several times more)
            row = sp.csr_matrix(
                (
                    vals[known].astype(np.float32),
                    (np.zeros(int(known.sum()), np.int64), rows[known]),
                ),
                shape=(1, len(self.kept)),
            )
            out[inside] = np.asarray(row @ self.weights).ravel()[targets[inside]]
        return out

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        """Exact: B[h, t] × the history weight; items EASE pruned add nothing."""
        if not len(hist) or not len(targets):
            return None
        position = self.row_positions
        rows, cols = position[hist], position[targets]
        if (rows >= 0).all() and (cols >= 0).all():  # the usual case: no pruned items
            return (self.weights[rows[:, None], cols[None, :]].T * weights).astype(np.float32)
        out = np.zeros((len(targets), len(hist)), np.float32)
        ok_r, ok_c = rows >= 0, cols >= 0
        if ok_r.any() and ok_c.any():
            block = self.weights[rows[ok_r][:, None], cols[ok_c][None, :]].T
            out[np.ix_(ok_c, ok_r)] = block * weights[ok_r]
        return out

    @property
    def row_positions(self) -> np.ndarray:
        """`positions()` computed once per fitted state (requests look it up every time)."""
        return self._prepared("row-positions", self.positions, made_from=self.kept)

    def _state(self) -> dict[str, np.ndarray]:
        return {"kept": self.kept, "weights": self.weights}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.kept = state["kept"]
        self.weights = state["weights"]


def item_attributes(items: pd.DataFrame, item_ids: np.ndarray) -> sp.csr_matrix:
    """(items × attribute values) 0/1, rows in `item_ids` order; values held by one item only
    are left out (a pseudo-user of one item would only add to that item's regularisation)."""
    table = catalog_frame(items).set_index("item_id").reindex([str(i) for i in item_ids])
    rows, values = [], []
    columns = (table["category"], table["brand"], table["attributes"])
    for row, described in enumerate(zip(*columns, strict=True)):
        for value in _values(*described):
            rows.append(row)
            values.append(value)
    codes, vocabulary = pd.factorize(pd.Series(values, dtype=object))
    matrix = sp.csr_matrix(
        (np.ones(len(codes), np.float32), (np.asarray(rows, np.int64), codes)),
        shape=(len(item_ids), len(vocabulary)),
    )
    matrix.data[:] = 1.0  # a value listed twice for one item counts once
    shared = np.flatnonzero(np.asarray(matrix.sum(axis=0)).ravel() >= 2)
    return sp.csr_matrix(matrix[:, shared])


def _values(category: object, brand: object, attributes: object) -> list[str]:
    out = [f"cat={c}" for c in category_levels(category if isinstance(category, str) else None)]
    if isinstance(brand, str) and brand.strip():
        out.append(f"brand={brand.strip()}")
    if isinstance(attributes, dict):
        for key, value in attributes.items():
            listed = value if isinstance(value, list | tuple) else [value]
            out += [f"{key}={v}" for v in listed if isinstance(v, str | bool | int)]
    return out


def _ease_weights(x: sp.csc_matrix, reg: float, side: sp.csr_matrix | None = None) -> np.ndarray:
    """B for the columns of x, computed in place in one n × n float32 array; `side` (the
    columns' attribute values, already weighted) adds side·sideᵀ to the Gram matrix."""
    n = x.shape[1]
    gram = np.empty((n, n), np.float32)
    xt = sp.csr_matrix(x.T)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        gram[:, start:stop] = (xt @ x[:, start:stop]).toarray()
        if side is not None:
            gram[:, start:stop] += (side @ side[start:stop].T).toarray()
    gram[np.diag_indices(n)] += reg
    # potrf/potri invert through a Cholesky factor in place; the transpose is the Fortran
    # view LAPACK wants and, the matrix being symmetric, the same matrix.
    factor, info = scipy.linalg.lapack.spotrf(gram.T, lower=False, overwrite_a=True)
    if info != 0:
        raise ModelFitError(f"ease: XᵀX + λI is not positive definite (lapack info {info})")
    upper, info = scipy.linalg.lapack.spotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ModelFitError(f"ease: inverting XᵀX + λI failed (lapack info {info})")
    inverse = _symmetrise_upper(upper).T  # C-ordered again, for fast sparse @ dense
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal[None, :]
    inverse[np.diag_indices(n)] = 0.0
    return inverse


def _symmetrise_upper(a: np.ndarray) -> np.ndarray:
    """Copy the upper triangle onto the lower one, block by block to stay in place."""
    n = a.shape[0]
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        a[start:stop, :start] = a[:start, start:stop].T
        square = a[start:stop, start:stop]
        a[start:stop, start:stop] = np.triu(square) + np.triu(square, 1).T
    return a
