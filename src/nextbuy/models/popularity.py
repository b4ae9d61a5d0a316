"""Non-personal baselines: all-time popularity, trending items and best sellers per category."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.matrix import MS_PER_DAY, InteractionMatrix
from nextbuy.data.schema import category_levels
from nextbuy.errors import ConfigError, DataError
from nextbuy.models.base import Recommender, TopK, accumulate
from nextbuy.models.request_top import best, order_of, unblocked, union

PopularityBy = Literal["users", "events", "weight"]


def item_popularity(data: InteractionMatrix, by: PopularityBy) -> np.ndarray:
    """Per item: distinct users, raw event count, or summed event weight (with decay)."""
    if by == "users":
        return np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.float32)
    if by == "events":
        return np.asarray(data.counts.sum(axis=0), dtype=np.float32).ravel()
    if by == "weight":
        return np.asarray(data.matrix.sum(axis=0), dtype=np.float32).ravel()
    raise ConfigError(f"popularity 'by' must be users, events or weight, not {by!r}")


class _Ranked(Recommender):
    """A model whose score is one vector shared by every user."""

    def __init__(self) -> None:
        super().__init__()
        self.item_scores = np.zeros(0, np.float32)

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """A prefix of the one order every shopper shares."""
        order = self._prepared("order", lambda: order_of(self.item_scores))
        if blocked is None:
            picked = order[:n]
        else:
            picked = unblocked(order[: n + int(blocked.sum())], blocked)[:n]
        return best(picked, self.item_scores[picked], n)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (histories.shape[0], self.n_items)).copy()

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_scores, (len(items), self.n_items)).copy()

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.item_scores = state["item_scores"]


def _never_seen_out(scores: np.ndarray) -> np.ndarray:
    # An item nobody interacted with is not popular; say so rather than rank it last.
    return np.where(scores > 0, scores, -np.inf).astype(np.float32)


class PopularityModel(_Ranked):
    """All-time most popular items, the same for everyone."""

    name = "popularity"
    baseline: ClassVar[bool] = True

    def __init__(self, by: PopularityBy = "users") -> None:
        super().__init__()
        self.by = by

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        self.item_scores = _never_seen_out(item_popularity(data, self.by))


class TrendingModel(_Ranked):
    """Items popular lately: event weights decayed by `half_life_days` before reference_time.

    Uses the matrix's per-item daily totals, so its half-life is independent of the one the
    matrix was built with, and anonymous events count too. Day resolution: events on the
    reference day count in full.
    """

    name = "trending"

    def __init__(self, half_life_days: float = 7.0) -> None:
        super().__init__()
        if half_life_days <= 0:
            raise ConfigError(f"half_life_days must be positive, got {half_life_days}")
        self.half_life_days = half_life_days

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        daily = data.item_daily
        if daily is None or data.reference_time is None or daily.nnz == 0:
            raise DataError("trending needs timestamped interactions")
        ref_day = data.reference_time.value // 1_000_000 // MS_PER_DAY
        age = np.maximum(ref_day - np.arange(daily.shape[1]), 0)
        decay = (0.5 ** (age / self.half_life_days)).astype(np.float64)
        self.item_scores = _never_seen_out(daily @ decay)


class CategoryBestsellers(Recommender):
    """Best sellers of the categories a user's history is in, by the history's shares.

    score(item) = share of the history in the item's category × the item's popularity
    relative to its category's best seller, plus a small tie-breaker of overall popularity
    so that a history without categorised items still gets the overall best sellers.
    `level` cuts category paths ("Shoes > Running") to that depth; None keeps them whole.
    """

    name = "category_bestsellers"
    TIE_BREAK = 1e-3

    def __init__(self, by: PopularityBy = "users", level: int | None = None) -> None:
        super().__init__()
        self.by = by
        self.level = level
        self.item_scores = np.zeros(0, np.float32)  # popularity within the category, 0..1
        self.overall = np.zeros(0, np.float32)  # popularity overall, 0..1
        self.category = np.zeros(0, np.int64)  # category code per item, -1 for none

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        self.category = self._categories(data.item_ids, items)
        pop = item_popularity(data, self.by).astype(np.float64)
        n_cat = int(self.category.max()) + 1 if len(self.category) else 0
        has = self.category >= 0
        best = np.zeros(n_cat)
        np.maximum.at(best, self.category[has], pop[has])
        within = np.zeros_like(pop)
        within[has] = pop[has] / np.maximum(best[self.category[has]], 1e-12)
        self.item_scores = within.astype(np.float32)
        self.overall = (pop / max(pop.max(initial=0.0), 1e-12)).astype(np.float32)

    def _categories(self, item_ids: np.ndarray, items: pd.DataFrame | None) -> np.ndarray:
        """A category code per item, -1 where the catalogue gives none."""
        if items is None or not {"item_id", "category"} <= set(items.columns):
            raise DataError("category_bestsellers needs the items table with item_id and category")
        table = items.assign(item_id=items["item_id"].astype(str))
        paths = table.drop_duplicates("item_id", keep="last").set_index("item_id")["category"]
        if self.level is not None:
            paths = paths.map(self._cut)
        per_item = paths.reindex([str(i) for i in item_ids])
        codes, _ = pd.factorize(per_item.where(per_item.notna() & (per_item != "")))
        return codes.astype(np.int64)

    def _cut(self, path: object) -> str | None:
        levels = category_levels(path if isinstance(path, str) else None)
        return levels[min(self.level or 1, len(levels)) - 1] if levels else None

    def _shares(self, histories: sp.csr_matrix) -> np.ndarray:
        n_cat = int(self.category.max()) + 1 if len(self.category) else 0
        has = self.category >= 0
        onehot = sp.csr_matrix(
            (np.ones(has.sum(), np.float32), (np.flatnonzero(has), self.category[has])),
            shape=(self.n_items, max(n_cat, 1)),
        )
        per_cat = np.asarray((abs(histories) @ onehot).todense(), dtype=np.float64)
        totals = per_cat.sum(axis=1, keepdims=True)
        return per_cat / np.where(totals > 0, totals, 1.0)

    def _combine(self, shares: np.ndarray) -> np.ndarray:
        has = self.category >= 0
        scores = np.zeros((shares.shape[0], self.n_items), np.float32)
        scores[:, has] = shares[:, self.category[has]] * self.item_scores[has]
        scores += self.TIE_BREAK * self.overall
        scores[:, self.overall <= 0] = -np.inf
        return scores

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """The shopper's categories' best sellers plus a prefix of the overall order: the
        popularity term does not depend on the shopper, so deeper items cannot reach n."""
        if blocked is None:
            blocked = np.zeros(self.n_items, bool)
        prepared = self._prepared("categories", lambda: CategoryOrders(self))
        category = self.category[row.indices]
        has = category >= 0
        per_category = accumulate(
            prepared.n_categories, category[has], np.abs(row.data[has]), np.ones(has.sum())
        )
        shares = per_category.astype(np.float64)[None, :]
        total = shares.sum(axis=1, keepdims=True)
        shares = (shares / np.where(total > 0, total, 1.0))[0]
        # slack: float32 rounding may tie two items of different popularity
        depth = n + int(blocked.sum()) + CATEGORY_SLACK
        mine = [prepared.members[c][:depth] for c in np.flatnonzero(shares > 0).tolist()]
        within = np.concatenate(mine) if mine else np.zeros(0, np.int64)
        rest = prepared.order[: depth + len(within)]
        items = union(self.n_items, within, rest)
        scores = np.zeros(len(items), np.float32)
        category = self.category[items]
        has = category >= 0
        scores[has] = shares[category[has]] * self.item_scores[items[has]]
        scores += prepared.base[items]
        scores[(self.overall[items] <= 0) | blocked[items]] = -np.inf
        return best(items, scores, n)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._combine(self._shares(histories))

    def _similar(self, items: np.ndarray) -> np.ndarray:
        rows = sp.csr_matrix(
            (np.ones(len(items), np.float32), (np.arange(len(items)), items)),
            shape=(len(items), self.n_items),
        )
        return self._score(rows)

    def _state(self) -> dict[str, np.ndarray]:
        return {"item_scores": self.item_scores, "overall": self.overall, "category": self.category}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.item_scores = state["item_scores"]
        self.overall = state["overall"]
        self.category = state["category"]


CATEGORY_SLACK = 8


class CategoryOrders:
    """Per category its sold items by popularity, and the overall order, once per fit."""

    def __init__(self, model: CategoryBestsellers) -> None:
        category = model.category
        n_cat = int(category.max()) + 1 if len(category) else 0
        self.n_categories = max(n_cat, 1)
        self.base = np.asarray(model.TIE_BREAK * model.overall, np.float32)
        finite = np.where(model.overall > 0, self.base, -np.inf)
        self.order = order_of(finite)
        # within a category, score order is popularity order; sold items only
        within = order_of(np.where(model.overall > 0, model.item_scores, -np.inf))
        by_category = category[within]
        self.members = [within[by_category == c] for c in range(n_cat)]
