"""Rules that only remove items: purchases, unavailable items, category and brand paths,
price ranges and filter expressions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextbuy.rules.base import Filter, RequestContext, isin_sorted
from nextbuy.rules.catalog import DAY_MS, ItemCatalog
from nextbuy.rules.expression import CompiledExpression


# -- filters --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExcludePurchased(Filter):
    days: float | None = None  # None: anything the user ever bought
    # "discovery": only while the served version shows what customers have not had yet; in
    # a shop that buys again, the version lists repeat purchases and the rule stands aside
    when: str = "always"
    name: str = "exclude_purchased"

    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        if self.when == "discovery" and ctx.repeats:
            return np.ones(len(items), bool)
        cutoff = None if self.days is None else ctx.now_ms - self.days * DAY_MS
        return ~isin_sorted(items, ctx.purchased_since(cutoff))


@dataclass(frozen=True)
class ExcludeUnavailable(Filter):
    name: str = "exclude_unavailable"

    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        return catalog.available[items]


@dataclass(frozen=True)
class PrefixFilter(Filter):
    """Include/exclude by category path prefix or by brand, case and spacing ignored."""

    field_name: str  # "category" or "brand"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    name: str = "categories"

    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        keep = np.ones(len(items), bool)
        if self.include:
            keep &= self._mask(catalog, self.include)[items]
        if self.exclude:
            keep &= ~self._mask(catalog, self.exclude)[items]
        return keep

    def _mask(self, catalog: ItemCatalog, names: tuple[str, ...]) -> np.ndarray:
        test = _PathTest(names) if self.field_name == "category" else _NameTest(names)
        return catalog.value_mask(self.field_name, ("rule", type(test).__name__, names), test)


@dataclass(frozen=True)
class _PathTest:
    """Does a category path start with one of `prefixes` at a level boundary?"""

    prefixes: tuple[str, ...]  # already normalised

    def __call__(self, path: str) -> bool:
        path = path.casefold()  # the catalogue already spaces levels as " > "
        return any(path == p or path.startswith(p + " > ") for p in self.prefixes)


@dataclass(frozen=True)
class _NameTest:
    names: tuple[str, ...]  # already case-folded

    def __call__(self, value: str) -> bool:
        return value.strip().casefold() in self.names


@dataclass(frozen=True)
class PriceRange(Filter):
    """Keeps prices within [min, max]; an unknown price cannot be vetted, so it goes."""

    min: float | None = None
    max: float | None = None
    name: str = "price_range"

    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        price = catalog.price[items]
        keep = ~np.isnan(price)
        if self.min is not None:
            keep &= price >= self.min
        if self.max is not None:
            keep &= price <= self.max
        return keep


@dataclass(frozen=True)
class ExpressionFilter(Filter):
    expression: CompiledExpression
    name: str = "expression"

    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        return self.expression(catalog, items, ctx.now_ms)
