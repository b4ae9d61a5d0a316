"""Each candidate generator's top n for one request, without a dense catalogue-wide row.

`Generator.generate` scores every item for every row (`model._score`, then `top_k`): right
for a batch of users, but for one request on a 100,000-item catalogue each dense row and its
partition cost about a millisecond, seven generators over. Most generators give a finite
score to few items (item kNN, EASE on its kept items, buy-again), or give the rest a score
that does not depend on the shopper (the category model's popularity term, trending), so
their top n is found among the items the shopper touches plus a prefix of an order computed
once at load.

Each `top` returns what `top_k(model._score(rows))` returns after the exclusions: the same
scores to the bit and the same items, except among items tied with the last score kept, where
`top_k`'s partition picks any of them (tests/test_request_tops.py compares them).
Content scores every item (a profile shares some feature with most items, and one pass over
the item vectors is the fastest way there), then keeps only what reaches the n-th value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from nextbuy.models.base import Recommender, TopK, accumulate, entries, top_k
from nextbuy.models.blend import OwnHistory
from nextbuy.models.content_model import ContentModel
from nextbuy.models.ease import EASE
from nextbuy.models.itemknn import ItemKNN
from nextbuy.models.mf import ALSModel, implicit_fold_in, implicit_gram
from nextbuy.models.popularity import CategoryBestsellers, _Ranked

CATEGORY_SLACK = 8
# float32 scores round; the bound is loosened by this share so rounding never prunes an item
ALS_BOUND_MARGIN = 1e-4
DenseScores = Callable[[Recommender, sp.csr_matrix], np.ndarray]


def best(items: np.ndarray, scores: np.ndarray, n: int) -> TopK:
    """The n highest finite scores among `items`, best first, ties to the lower index, as a
    1 × n `TopK` padded with -1 / -inf (what `top_k` gives for one row)."""
    finite = np.isfinite(scores)
    items, scores = items[finite], scores[finite]
    if len(items) > n:
        # everything tied with the n-th best stays, so the index tie-break below is exact
        nth = np.partition(scores, len(scores) - n)[len(scores) - n]
        keep = scores >= nth
        items, scores = items[keep], scores[keep]
    order = np.lexsort((items, -scores))[:n]
    out_items = np.full((1, n), -1, np.int64)
    out_scores = np.full((1, n), -np.inf, np.float32)
    out_items[0, : len(order)] = items[order]
    out_scores[0, : len(order)] = scores[order]
    return TopK(out_items, out_scores)


def _order(scores: np.ndarray) -> np.ndarray:
    """Items with a finite score, best first, ties to the lower index."""
    finite = np.flatnonzero(np.isfinite(scores))
    return finite[np.lexsort((finite, -scores[finite]))]


def _unblocked(items: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    return items[~blocked[items]] if len(items) else items


class RequestTops:
    """Per-generator shortcuts, prepared once per loaded model (read-only afterwards)."""

    def __init__(self, n_items: int, dense: DenseScores) -> None:
        self.n_items = n_items
        self.dense = dense  # the dense scores of a model without a shortcut
        self._prepared: dict[int, object] = {}

    def top(
        self, model: Recommender, rows: sp.csr_matrix, n: int, blocked: np.ndarray | None
    ) -> TopK:
        """The top n of one history row; `blocked` (bool per item) marks excluded items."""
        if blocked is None:
            blocked = np.zeros(self.n_items, bool)
        if isinstance(model, ALSModel):
            return self._als(model, rows, n, blocked)
        if isinstance(model, ItemKNN):
            return self._knn(model, rows, n, blocked)
        if isinstance(model, ContentModel):
            return self._content(model, rows, n, blocked)
        if isinstance(model, EASE):
            return self._ease(model, rows, n, blocked)
        if isinstance(model, _Ranked):
            return self._ranked(model, n, blocked)
        if isinstance(model, CategoryBestsellers):
            return self._category(model, rows, n, blocked)
        if isinstance(model, OwnHistory):
            return self._own(model, rows, n, blocked)
        scores = np.asarray(self.dense(model, rows), np.float32)
        scores[0, blocked] = -np.inf
        return top_k(scores, n)

    def _cached(self, model: Recommender, make: Callable[[], object]) -> object:
        found = self._prepared.get(id(model))
        if found is None:
            found = self._prepared[id(model)] = make()
        return found

    # -- ALS: the fold-in, then only the items whose score could still reach the top n --------
    def _als(self, model: ALSModel, rows: sp.csr_matrix, n: int, blocked: np.ndarray) -> TopK:
        """Items are visited by decreasing factor norm. A first block gives an n-th best
        score; no later item whose norm × the shopper's norm (Cauchy–Schwarz) plus the
        highest bias left falls below it can enter the top n, so the second block stops
        there. On the 100,000-item benchmark catalogue about an eighth of the items are
        scored."""
        if not rows.nnz:  # mask_empty: nothing to fold in
            return best(np.zeros(0, np.int64), np.zeros(0, np.float32), n)
        prepared = self._cached(model, lambda: _ALSPrepared(model))
        assert isinstance(prepared, _ALSPrepared)
        user = prepared.fold_in(model, rows)
        reach = float(np.linalg.norm(user)) * (1.0 + ALS_BOUND_MARGIN)
        total = len(prepared.order)
        first = min(max(4 * n, total // 8), total)
        items, scores = prepared.scores(user, 0, first, blocked)
        finite = scores[np.isfinite(scores)]
        stop = total
        if first < total and len(finite) >= n and reach > 0:
            nth = float(np.partition(finite, len(finite) - n)[len(finite) - n])
            # norms descend: the first position whose bound falls below the n-th best
            limit = (nth - prepared.bias_left[first]) / reach
            stop = first + int(np.searchsorted(-prepared.norms[first:], -limit, side="left"))
        if stop > first:
            more_items, more_scores = prepared.scores(user, first, stop, blocked)
            items = np.concatenate([items, more_items])
            scores = np.concatenate([scores, more_scores])
        return best(items, scores, n)

    # -- sparse products: only the items something contributed to are finite -------------------
    def _knn(self, model: ItemKNN, rows: sp.csr_matrix, n: int, blocked: np.ndarray) -> TopK:
        at, items, values = entries(model.similarity, rows.indices)
        touched = accumulate(self.n_items, items, rows.data[at], values)
        reached = np.zeros(self.n_items, bool)
        reached[items] = True  # a mask beats np.unique for a heavy history's many entries
        found = np.flatnonzero(reached & ~blocked)
        return best(found, touched[found], n)

    def _own(self, model: OwnHistory, rows: sp.csr_matrix, n: int, blocked: np.ndarray) -> TopK:
        items = rows.indices.astype(np.int64)
        mine = (rows.data > 0) & ~blocked[items]
        items = items[mine]
        scores = rows.data[mine].astype(np.float32) + (model.TIE_BREAK * model.popularity)[items]
        return best(items, scores.astype(np.float32), n)

    def _ease(self, model: EASE, rows: sp.csr_matrix, n: int, blocked: np.ndarray) -> TopK:
        kept = model.kept
        if not rows.nnz or not len(kept):
            return best(np.zeros(0, np.int64), np.zeros(0, np.float32), n)
        position = self._cached(model, model.positions)
        assert isinstance(position, np.ndarray)
        at = position[rows.indices]
        inside = at >= 0
        # the same CSR × dense kernel as `EASE._score`, on the row's kept columns
        sub = sp.csr_matrix(
            (rows.data[inside], at[inside].astype(np.int32), np.asarray([0, inside.sum()])),
            shape=(1, len(kept)),
        )
        scores = np.asarray(sub @ model.weights, np.float32).ravel()
        scores[blocked[kept]] = -np.inf
        top = top_k(scores[None, :], n)
        return TopK(np.where(top.items >= 0, kept[np.maximum(top.items, 0)], -1), top.scores)

    # -- a shopper-independent term plus a sparse one: the prefix of a fixed order suffices ------
    def _ranked(self, model: _Ranked, n: int, blocked: np.ndarray) -> TopK:
        order = self._cached(model, lambda: _order(model.item_scores))
        assert isinstance(order, np.ndarray)
        picked = _unblocked(order[: n + int(blocked.sum())], blocked)[:n]
        return best(picked, model.item_scores[picked], n)

    def _content(
        self, model: ContentModel, rows: sp.csr_matrix, n: int, blocked: np.ndarray
    ) -> TopK:
        """`ContentModel._score`'s arithmetic (one pass over the item vectors, plus the
        popularity term), without its copies, then the top n of the dense row."""
        if not rows.nnz:  # mask_empty: no history, nothing to go on
            return best(np.zeros(0, np.int64), np.zeros(0, np.float32), n)
        base = self._cached(model, lambda: _content_base(model))
        assert isinstance(base, np.ndarray)
        scores = model.vectors @ model.dense_profiles(rows)[0]
        scores += base
        scores[blocked] = -np.inf
        return dense_best(scores, n)

    def _category(
        self, model: CategoryBestsellers, rows: sp.csr_matrix, n: int, blocked: np.ndarray
    ) -> TopK:
        prepared = self._cached(model, lambda: _CategoryPrepared(model, self.n_items))
        assert isinstance(prepared, _CategoryPrepared)
        category = model.category[rows.indices]
        has = category >= 0
        per_category = accumulate(
            prepared.n_categories, category[has], np.abs(rows.data[has]), np.ones(has.sum())
        )
        shares = per_category.astype(np.float64)[None, :]
        total = shares.sum(axis=1, keepdims=True)
        shares = (shares / np.where(total > 0, total, 1.0))[0]
        # slack: float32 rounding may tie two items of different popularity
        depth = n + int(blocked.sum()) + CATEGORY_SLACK
        mine = [prepared.members[c][:depth] for c in np.flatnonzero(shares > 0).tolist()]
        within = np.concatenate(mine) if mine else np.zeros(0, np.int64)
        rest = prepared.order[: depth + len(within)]
        items = _union(self.n_items, within, rest)
        scores = np.zeros(len(items), np.float32)
        category = model.category[items]
        has = category >= 0
        scores[has] = shares[category[has]] * model.item_scores[items[has]]
        scores += prepared.base[items]
        scores[(model.overall[items] <= 0) | blocked[items]] = -np.inf
        return best(items, scores, n)


class _ALSPrepared:
    """Factors in order of decreasing norm, and YᵀY + λI once (not per request)."""

    def __init__(self, model: ALSModel) -> None:
        emb = model._embeddings()
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        self.order = np.argsort(-norms, kind="stable")
        self.factors = np.ascontiguousarray(emb[self.order])
        self.norms = norms[self.order]
        bias = np.broadcast_to(np.asarray(model._bias(), np.float32), (len(emb),))
        self.bias = np.ascontiguousarray(bias[self.order])
        # the highest bias among items from position i on
        self.bias_left = np.maximum.accumulate(self.bias[::-1].astype(np.float64))[::-1]
        self.trained = model.trained[self.order]
        self.gram = implicit_gram(emb, model.regularization)

    def scores(
        self, user: np.ndarray, start: int, stop: int, blocked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items, float32 scores) of positions start..stop of the norm order."""
        items = self.order[start:stop]
        part = self.factors[start:stop] @ user + self.bias[start:stop]
        part[~self.trained[start:stop] | blocked[items]] = -np.inf
        return items, part.astype(np.float32, copy=False)

    def fold_in(self, model: ALSModel, rows: sp.csr_matrix) -> np.ndarray:
        vals = rows.data.astype(np.float64)
        return implicit_fold_in(model._embeddings(), self.gram, rows.indices, vals, model.alpha)


class _CategoryPrepared:
    def __init__(self, model: CategoryBestsellers, n_items: int) -> None:
        category = model.category
        n_cat = int(category.max()) + 1 if len(category) else 0
        self.n_categories = max(n_cat, 1)
        self.base = np.asarray(model.TIE_BREAK * model.overall, np.float32)
        finite = np.where(model.overall > 0, self.base, -np.inf)
        self.order = _order(finite)
        # within a category, score order is popularity order; sold items only
        within = _order(np.where(model.overall > 0, model.item_scores, -np.inf))
        by_category = category[within]
        self.members = [within[by_category == c] for c in range(n_cat)]


def dense_best(scores: np.ndarray, n: int) -> TopK:
    """`best` of a dense row of every item: the n-th value first, then only what reaches it."""
    if len(scores) > n:
        nth = np.partition(scores, len(scores) - n)[len(scores) - n]
        if np.isfinite(nth):
            reach = np.flatnonzero(scores >= nth)
            return best(reach, scores[reach], n)
    return best(np.arange(len(scores)), scores, n)


def _content_base(model: ContentModel) -> np.ndarray:
    """The popularity term `score_profiles` adds, -inf where an item has no content."""
    weight = model.popularity_weight
    base = np.float32(weight) * model.popularity if weight else np.zeros(model.n_items)
    return np.where(model.has_content, base, -np.inf).astype(np.float32)


def _union(n_items: int, *parts: np.ndarray) -> np.ndarray:
    """Sorted distinct items of `parts` (a mask over the catalogue beats sorting here)."""
    mask = np.zeros(n_items, bool)
    for part in parts:
        mask[part] = True
    return np.flatnonzero(mask)
