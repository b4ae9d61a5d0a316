"""Request-time business rules: filters, boosts, promotions, diversity and discovery slots.

Rules are configured per placement in nextbuy.toml and built into plain objects, so a new
config applies to the next request without retraining or a restart. Everything works on
numpy arrays of candidate indices; only MMR (over at most MMR_POOL items) and the final
assembly of the k results loop in Python.

Order semantics of `apply_rules`:
- Filters hold everywhere, wherever they are written: they are combined into one mask that
  removes candidates before any other rule runs and vets every item `promote` brings in,
  so a filter written after `promote` still applies. Built-in rules only re-order or bring
  in vetted items; if the chain holds a rule of another kind, the mask is checked again on
  the final list.
- The other rules run in the order written. Boosts re-sort by score, so write them before
  `diversity` (PlacementConfig refuses a boost after diversity, which would undo it).
- `promote` and `discovery` pin the items they place: later boosts and diversity re-order
  the other items around them.
- The caps of every `diversity` rule (max_per_category, max_per_brand) also hold on the
  final list, placed items included; items without a category or brand are never capped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nextbuy.errors import ConfigError
from nextbuy.pipeline.catalog import DAY_MS, ItemCatalog
from nextbuy.pipeline.expression import CompiledExpression, compile_expression
from nextbuy.schema import category_levels

MMR_POOL = 100  # MMR looks at the best this many candidates (or k, if larger)
USUAL_SHARE = 0.8  # a user's usual categories cover this share of their history
REASON_NEW = "new arrival"
REASON_PROMOTED = "promoted"
REASON_DISCOVERY = "something new for you"

Admit = Callable[[np.ndarray], np.ndarray]


# -- request data ---------------------------------------------------------------------------
@dataclass
class Candidates:
    """Ranked candidates: item indices best first, with score, reason and origin per item."""

    items: np.ndarray  # int64 item indices, best first
    scores: np.ndarray  # float64
    reasons: np.ndarray  # object: short text per item or None
    origin: np.ndarray  # object: the generator or rule that put it there
    # bool per position, or None for none: placed by promote/discovery, so later rules
    # that re-order keep it where it is.
    pinned: np.ndarray | None = None

    @classmethod
    def from_scores(
        cls, items: np.ndarray, scores: np.ndarray, origin: str = "model"
    ) -> Candidates:
        """Candidates from one generator, sorted best first, no reasons yet."""
        items = np.asarray(items, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        return cls(
            items[order], scores[order], _objects(len(items), None), _objects(len(items), origin)
        )

    def __len__(self) -> int:
        return len(self.items)

    def take(self, which: np.ndarray | slice) -> Candidates:
        """The candidates at `which` (indices, a mask or a slice), in that order."""
        return Candidates(
            self.items[which],
            self.scores[which],
            self.reasons[which],
            self.origin[which],
            None if self.pinned is None else self.pinned[which],
        )

    def pinned_mask(self) -> np.ndarray:
        return np.zeros(len(self), bool) if self.pinned is None else self.pinned


@dataclass
class RequestContext:
    """What a rule may know about the request and the user behind it."""

    user_id: str | None
    now_ms: float
    k: int
    purchased_at: dict[int, float] = field(default_factory=dict)  # item index -> last time (ms)
    history: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # recent first
    context: dict[str, str] = field(default_factory=dict)  # page category, device, region...
    # the served version lists what a customer bought before (the shop buys again)
    repeats: bool = False
    _purchases: tuple[np.ndarray, np.ndarray] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def purchased_since(self, cutoff_ms: float | None) -> np.ndarray:
        """Sorted indices of items bought at or after `cutoff_ms` (None: ever)."""
        if self._purchases is None:
            n = len(self.purchased_at)
            self._purchases = (
                np.fromiter(self.purchased_at.keys(), np.int64, n),
                np.fromiter(self.purchased_at.values(), np.float64, n),
            )
        items, times = self._purchases
        return np.sort(items if cutoff_ms is None else items[times >= cutoff_ms])


class Rule(Protocol):
    name: str

    def apply(self, ctx: RequestContext, cands: Candidates, catalog: ItemCatalog) -> Candidates: ...


class Filter(ABC):
    """A rule that only removes items; `keep` says which of `items` may stay."""

    name: str

    @abstractmethod
    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        """Bool mask over `items`."""

    def apply(self, ctx: RequestContext, cands: Candidates, catalog: ItemCatalog) -> Candidates:
        return cands.take(self.keep(ctx, cands.items, catalog))


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
        return ~_isin_sorted(items, ctx.purchased_since(cutoff))


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


# -- boosts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoostMargin:
    """score × (1 + weight × margin); an unknown margin leaves the score alone."""

    weight: float = 1.0
    name: str = "boost_margin"

    def apply(self, ctx: RequestContext, cands: Candidates, catalog: ItemCatalog) -> Candidates:
        factor = 1.0 + self.weight * catalog.margin[cands.items]
        factor[np.isnan(factor)] = 1.0
        np.maximum(factor, 0.0, out=factor)
        return _resort(_boosted(cands, factor))


@dataclass(frozen=True)
class BoostNew:
    """score × factor for items created within `days`; their reason becomes "new arrival"."""

    days: float = 14.0
    factor: float = 1.5
    name: str = "boost_new"

    def apply(self, ctx: RequestContext, cands: Candidates, catalog: ItemCatalog) -> Candidates:
        age = (ctx.now_ms - catalog.created_at_ms[cands.items]) / DAY_MS
        new = (age >= 0) & (age <= self.days)  # unknown age (NaN) compares false
        if not new.any():
            return cands
        boosted = _boosted(cands, np.where(new, self.factor, 1.0))
        # A generator's reason ("because you bought X") says more than "new", so keep it.
        fresh = np.flatnonzero(new)
        fresh = fresh[np.equal(boosted.reasons[fresh], None)]
        if len(fresh):
            boosted.reasons = boosted.reasons.copy()
            boosted.reasons[fresh] = REASON_NEW
        return _resort(boosted)


def _boosted(cands: Candidates, factor: np.ndarray) -> Candidates:
    # s + |s|(f - 1) is s × f for positive scores and still moves a negative score the
    # boost's way (some models score below zero); order is what matters downstream.
    scores = cands.scores
    if len(scores) and scores.min() >= 0:
        scores = scores * factor
    else:
        scores = scores + np.abs(scores) * (factor - 1.0)
    return Candidates(cands.items, scores, cands.reasons, cands.origin, cands.pinned)


def _resort(cands: Candidates) -> Candidates:
    """Best score first, pinned items left at their positions."""
    if cands.pinned is None or not cands.pinned.any():
        return cands.take(np.argsort(-cands.scores, kind="stable"))
    free = np.flatnonzero(~cands.pinned)
    order = np.arange(len(cands))
    order[free] = free[np.argsort(-cands.scores[free], kind="stable")]
    return cands.take(order)


# -- promotions and discovery ---------------------------------------------------------------
@dataclass(frozen=True)
class Promote:
    """Puts up to `slots` promoted items at `positions` (1-based; default the top).

    Which promoted items: those among the candidates by this user's score first, then the
    others in the order configured. A promoted item must be available and, inside
    apply_rules, pass every filter of the placement.
    """

    items: tuple[str, ...]
    slots: int = 1
    positions: tuple[int, ...] | None = None
    name: str = "promote"

    def apply(
        self,
        ctx: RequestContext,
        cands: Candidates,
        catalog: ItemCatalog,
        admit: Admit | None = None,
    ) -> Candidates:
        ids = catalog.indices_of(self.items)
        ids = ids[catalog.available[ids]]
        if admit is not None and len(ids):
            ids = ids[admit(ids)]
        if len(ids) == 0:
            return cands
        # The promoted items the user's candidates hold are ranked by the user's own
        # scores; the others join after them, in the order configured. An item another
        # rule already placed keeps its place and is not promoted twice.
        held: list[int] = []
        joining: list[int] = []
        pinned = cands.pinned
        for item, at in zip(ids.tolist(), positions_in(cands.items, ids).tolist(), strict=True):
            if at < 0:
                joining.append(item)
            elif pinned is None or not pinned[at]:
                held.append(at)
        held.sort(key=lambda at: -cands.scores[at])
        budget = min(self.slots, len(self.positions)) if self.positions else self.slots
        picks = held[:budget]
        joining = joining[: budget - len(picks)]
        if joining:
            picks += range(len(cands), len(cands) + len(joining))
            cands = _append(cands, np.array(joining, np.int64), origin="promoted")
        if not picks:
            return cands
        wanted = self.positions or tuple(range(1, self.slots + 1))
        targets = [min(p - 1, ctx.k - 1) for p in wanted[: len(picks)]]
        return _place(cands, np.array(picks, np.int64), targets, "promoted", REASON_PROMOTED)


@dataclass(frozen=True)
class Discovery:
    """Guarantees round(share × k) of the k slots to categories outside the user's usual.

    Usual categories are the fewest that cover 80% of the user's history. The slots go to
    the best-scored outside candidates (the user's own model scores, not chance), one per
    category before any second, spread evenly through the list. Outside items that already
    rank in the top k count towards the share. No history: nothing to discover from.
    """

    share: float = 0.2
    by: Literal["category", "top_category"] = "top_category"
    name: str = "discovery"

    def apply(self, ctx: RequestContext, cands: Candidates, catalog: ItemCatalog) -> Candidates:
        slots = int(self.share * ctx.k + 0.5)  # round half up: share 0.25 of 10 gives 3
        if slots == 0 or len(ctx.history) == 0 or len(cands) == 0:
            return cands
        codes = getattr(catalog, f"{self.by}_code")
        usual = _usual_codes(ctx.history, codes, catalog)
        lut = np.zeros(len(getattr(catalog, f"{self.by}_vocab")) + 1, bool)  # [-1]: None
        lut[usual] = True
        cand_codes = codes[cands.items]
        outside = (cand_codes >= 0) & ~lut[cand_codes] & ~cands.pinned_mask()
        top = min(ctx.k, len(cands))
        need = slots - int(outside[:top].sum())
        pool = np.flatnonzero(outside[top:]) + top
        if need <= 0 or len(pool) == 0:
            return cands
        picks = _best_per_group(pool, cands.scores[pool], cand_codes[pool])[:need]
        targets = [int((i + 1) * top / (len(picks) + 1)) for i in range(len(picks))]
        # Outside items already in the top k are pinned too, or the picks would push them out.
        natural = np.flatnonzero(outside[:top])
        return _place(cands, picks, targets, "discovery", REASON_DISCOVERY, keep=natural)


def _usual_codes(history: np.ndarray, codes: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
    """The fewest category codes that cover USUAL_SHARE of the user's history."""
    history = history[(history >= 0) & (history < len(catalog))]
    seen = codes[history]
    seen = seen[seen >= 0]
    if len(seen) == 0:
        return np.empty(0, np.int64)
    counts = np.bincount(seen)
    order = np.argsort(-counts, kind="stable")
    covered = np.cumsum(counts[order])
    n = int(np.searchsorted(covered, USUAL_SHARE * len(seen) - 1e-9)) + 1
    return order[:n]


def _best_per_group(pool: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`pool` by score, the best of each group first, then the seconds, and so on."""
    order = np.argsort(-scores, kind="stable")
    pool, groups = pool[order], groups[order]
    # Rank of each item within its group, in score order.
    by_group = np.argsort(groups, kind="stable")
    sorted_groups = groups[by_group]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    rank = np.empty(len(groups), np.int64)
    rank[by_group] = np.arange(len(groups)) - run
    return pool[np.argsort(rank, kind="stable")]


def _place(
    cands: Candidates,
    picks: np.ndarray,
    targets: Sequence[int],
    origin: str,
    reason: str,
    keep: np.ndarray | None = None,
) -> Candidates:
    """Moves candidates `picks` to `targets` and pins them, with origin and reason.

    Items already pinned, and those at positions `keep` (pinned now), keep their places.
    """
    n = len(cands)
    stay: list[int] = [] if cands.pinned is None else np.flatnonzero(cands.pinned).tolist()
    if keep is not None:
        stay += keep.tolist()
    moving = set(picks.tolist())
    fixed = {p: p for p in stay if p not in moving}
    placed: list[int] = []
    for pick, target in zip(picks.tolist(), targets, strict=False):
        at = _free_position(fixed, max(0, min(int(target), n - 1)), n)
        fixed[at] = pick
        placed.append(at)
    positions, chosen = list(fixed.keys()), list(fixed.values())
    is_fixed = np.zeros(n, bool)
    is_fixed[positions] = True
    unused = np.ones(n, bool)
    unused[chosen] = False
    order = np.empty(n, np.int64)
    order[positions] = chosen
    order[~is_fixed] = np.flatnonzero(unused)
    out = cands.take(order)
    out.pinned = is_fixed
    out.origin = out.origin.copy()
    out.origin[placed] = origin
    out.reasons = out.reasons.copy()
    out.reasons[placed] = reason
    return out


def _free_position(fixed: Mapping[int, int], target: int, n: int) -> int:
    for pos in [*range(target, n), *range(target - 1, -1, -1)]:
        if pos not in fixed:
            return pos
    raise AssertionError("more placed items than candidates")


# -- diversity ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Diversity:
    """Maximal marginal relevance over the best MMR_POOL candidates, with strict caps.

    Picks, one at a time, the item maximising λ·relevance − (1 − λ)·similarity to those
    already picked; relevance is the score scaled to [0, 1] within the pool, similarity
    is 1 for the same `by` category, 0.5 for the same brand, else 0. λ = 1 keeps score
    order. Items over a cap go behind the picks (apply_rules then drops them).
    """

    mmr_lambda: float = 0.7
    max_per_category: int | None = None
    max_per_brand: int | None = None
    by: Literal["category", "top_category"] = "top_category"
    name: str = "diversity"

    def caps(self) -> list[tuple[str, int]]:
        """(catalog code column, limit) per cap."""
        out = []
        if self.max_per_category is not None:
            out.append((f"{self.by}_code", self.max_per_category))
        if self.max_per_brand is not None:
            out.append(("brand_code", self.max_per_brand))
        return out

    def apply(self, ctx: RequestContext, cands: Candidates, catalog: ItemCatalog) -> Candidates:
        n = len(cands)
        if n == 0:
            return cands
        pool_size = min(n, max(MMR_POOL, ctx.k))
        pinned = cands.pinned_mask()
        free = np.flatnonzero(~pinned[:pool_size])
        placed = np.flatnonzero(pinned[: min(ctx.k, n)])
        groups = getattr(catalog, f"{self.by}_code")[cands.items]
        brands = catalog.brand_code[cands.items]
        need = min(ctx.k, n) - len(placed)
        limits = (self.max_per_category, self.max_per_brand)
        order = np.arange(n)
        # MMR re-orders the free positions of the pool; pinned ones and the tail stay.
        order[free] = _mmr(
            free, placed, cands.scores, groups, brands, self.mmr_lambda, limits, need
        )
        return cands.take(order)


def _mmr(
    free: np.ndarray,
    placed: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    brands: np.ndarray,
    lam: float,
    limits: tuple[int | None, int | None],
    need: int,
) -> np.ndarray:
    """Positions from `free` in MMR order (at most `need` picked), then the rest by score.

    Similarity takes three values (1 same group, 0.5 same brand, 0 else), so the best
    next pick is the first item, in score order, of one of three classes: new group and
    new brand, new group, anything. A picked group or brand never becomes new again and
    caps only fill up, so each class's pointer only moves forward: one pass over the pool.
    """
    if len(free) == 0 or need <= 0:
        return free
    ranked = free[np.argsort(-scores[free], kind="stable")]
    cat_limit, brand_limit = limits
    if lam >= 1.0 and cat_limit is None and brand_limit is None:
        return ranked
    m = len(ranked)
    rel = scores[ranked]
    span = rel[0] - rel[-1]
    value = (lam * (rel - rel[-1]) / span if span > 0 else np.zeros(m)).tolist()
    group_of, brand_of = groups[ranked].tolist(), brands[ranked].tolist()
    cat_cap = cat_limit if cat_limit is not None else m + need + 1
    brand_cap = brand_limit if brand_limit is not None else m + need + 1
    # Picks so far per group and brand; unknown codes (-1) are never alike, never counted.
    group_count: dict[int, int] = {}
    brand_count: dict[int, int] = {}

    def count(group: int, brand: int) -> None:
        if group >= 0:
            group_count[group] = group_count.get(group, 0) + 1
        if brand >= 0:
            brand_count[brand] = brand_count.get(brand, 0) + 1

    for pos in placed.tolist():  # pinned items in the top k count as picked already
        count(int(groups[pos]), int(brands[pos]))
    weight = 1.0 - lam
    # (class, penalty): 0 new group and brand; 1 new group (0.5 at most); 2 anything.
    classes = ((0, 0.0), (1, 0.5 * weight), (2, weight)) if weight > 0 else ((2, 0.0),)
    pointers = [0, 0, 0]
    taken = [False] * m
    chosen: list[int] = []
    for _ in range(min(need, m)):
        best, best_at = -np.inf, m
        for kind, penalty in classes:
            at = pointers[kind]
            while at < m:
                if not taken[at]:
                    seen_group = group_count.get(group_of[at], 0)
                    seen_brand = brand_count.get(brand_of[at], 0)
                    if (
                        seen_group < cat_cap
                        and seen_brand < brand_cap
                        and (kind == 2 or (seen_group == 0 and (kind == 1 or seen_brand == 0)))
                    ):
                        break
                at += 1
            pointers[kind] = at
            if at < m and (value[at] - penalty, -at) > (best, -best_at):
                best, best_at = value[at] - penalty, at
        if best_at == m:
            break
        chosen.append(best_at)
        taken[best_at] = True
        count(group_of[best_at], brand_of[best_at])
    rest = [at for at in range(m) if not taken[at]]
    return ranked[chosen + rest]


# -- assembly -------------------------------------------------------------------------------
def apply_rules(
    rules: Sequence[Rule], ctx: RequestContext, cands: Candidates, catalog: ItemCatalog
) -> Candidates:
    """Runs `rules` (filters first, the rest in order) and returns at most ctx.k items."""
    filters = [r for r in rules if isinstance(r, Filter)]

    def admit(items: np.ndarray) -> np.ndarray:
        keep = (items >= 0) & (items < len(catalog))
        inside = items[keep] if not keep.all() else items
        passed = np.ones(len(inside), bool)
        for rule in filters:
            passed &= rule.keep(ctx, inside, catalog)
        keep[keep] = passed
        return keep

    cands = _unique(cands)
    cands = cands.take(admit(cands.items))
    caps: list[tuple[str, int]] = []
    for rule in rules:
        if isinstance(rule, Filter):
            continue
        if isinstance(rule, Promote):
            cands = rule.apply(ctx, cands, catalog, admit=admit)
        else:
            cands = rule.apply(ctx, cands, catalog)
        if isinstance(rule, Diversity):
            caps.extend(rule.caps())
    if all(isinstance(rule, _BUILT_IN) for rule in rules):
        # Built-in rules only re-order, or bring in items vetted by `admit` (promote).
        return _assemble(cands, ctx.k, caps, catalog)
    # A rule of another kind may bring in anything: vet what it would show.
    cands = _unique(cands)
    while True:
        out = _assemble(cands, ctx.k, caps, catalog)
        ok = admit(out.items)
        if ok.all():
            return out
        cands = cands.take(~np.isin(cands.items, out.items[~ok]))


def _assemble(
    cands: Candidates, k: int, caps: list[tuple[str, int]], catalog: ItemCatalog
) -> Candidates:
    """The first k items that respect every cap; pinned items first, at their positions."""
    if not caps or _caps_hold(cands.items[:k], caps, catalog):
        return cands.take(slice(0, k))
    n = len(cands)
    codes = [(getattr(catalog, column)[cands.items].tolist(), limit) for column, limit in caps]
    counts: list[dict[int, int]] = [{} for _ in caps]

    def fits(i: int) -> bool:
        return all(c[i] < 0 or counts[j].get(c[i], 0) < limit for j, (c, limit) in enumerate(codes))

    def count(i: int) -> None:
        for j, (c, _) in enumerate(codes):
            if c[i] >= 0:
                counts[j][c[i]] = counts[j].get(c[i], 0) + 1

    pinned = cands.pinned_mask()
    fixed: dict[int, int] = {}
    for pos in np.flatnonzero(pinned[:k]).tolist():
        if fits(pos):
            count(pos)
            fixed[pos] = pos
    order: list[int] = []
    candidate = 0
    for slot in range(k):
        if slot in fixed:
            order.append(fixed[slot])
            continue
        while candidate < n and (pinned[candidate] or not fits(candidate)):
            candidate += 1
        if candidate >= n:
            order.extend(p for p in sorted(fixed) if p > slot)
            break
        count(candidate)
        order.append(candidate)
        candidate += 1
    return cands.take(np.array(order, np.int64))


def _caps_hold(items: np.ndarray, caps: list[tuple[str, int]], catalog: ItemCatalog) -> bool:
    for column, limit in caps:
        codes = getattr(catalog, column)[items]
        codes = codes[codes >= 0]
        if len(codes) and np.bincount(codes).max() > limit:
            return False
    return True


def _unique(cands: Candidates) -> Candidates:
    """Keeps the first (best) occurrence of each item."""
    ordered = np.sort(cands.items)
    if not (ordered[1:] == ordered[:-1]).any():  # the usual case, at a third of np.unique
        return cands
    _, first = np.unique(cands.items, return_index=True)
    if len(first) == len(cands):
        return cands
    return cands.take(np.sort(first))


_BUILT_IN = (Filter, BoostMargin, BoostNew, Promote, Diversity, Discovery)


# -- small helpers --------------------------------------------------------------------------
def _normalise_path(path: str) -> str:
    """'shoes>Running ' -> 'shoes > running', as the catalogue spaces its paths, case-folded."""
    levels = category_levels(path)
    return levels[-1].casefold() if levels else ""


def _objects(n: int, value: object) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def _isin_sorted(items: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """items ∈ sorted_set, by binary search (np.isin costs more on small arrays)."""
    if len(sorted_set) == 0:
        return np.zeros(len(items), bool)
    pos = np.minimum(np.searchsorted(sorted_set, items), len(sorted_set) - 1)
    return sorted_set[pos] == items


def positions_in(items: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each `wanted` item (a handful) in `items`, or -1."""
    if len(items) == 0:
        return np.full(len(wanted), -1, np.int64)
    hits = items[:, None] == wanted[None, :]
    return np.where(hits.any(axis=0), hits.argmax(axis=0), -1)


def _append(cands: Candidates, items: np.ndarray, origin: str) -> Candidates:
    fill = cands.scores[-1] if len(cands) else 0.0
    return Candidates(
        np.concatenate([cands.items, items]),
        np.concatenate([cands.scores, np.full(len(items), fill)]),
        np.concatenate([cands.reasons, _objects(len(items), None)]),
        np.concatenate([cands.origin, _objects(len(items), origin)]),
        None
        if cands.pinned is None
        else np.concatenate([cands.pinned, np.zeros(len(items), bool)]),
    )


# -- configuration --------------------------------------------------------------------------
class _RuleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self) -> Rule:
        raise NotImplementedError


class ExcludePurchasedConfig(_RuleConfig):
    """Leave out what the user bought within `days` (unset: ever). `when = "discovery"`
    applies it only while the served version shows what customers have not had yet: where
    `nextbuy train` found that customers buy again, its lists repeat purchases on purpose."""

    type: Literal["exclude_purchased"] = "exclude_purchased"
    days: float | None = Field(default=None, gt=0)
    when: Literal["always", "discovery"] = "always"

    def build(self) -> Rule:
        return ExcludePurchased(self.days, self.when)


class ExcludeUnavailableConfig(_RuleConfig):
    """Leave out items the shop marks unavailable or holds no stock of."""

    type: Literal["exclude_unavailable"] = "exclude_unavailable"

    def build(self) -> Rule:
        return ExcludeUnavailable()


class CategoriesConfig(_RuleConfig):
    """Keep only `include` paths (if any), then drop `exclude` ones.

    A name matches its path and everything below it: "Shoes" covers "Shoes > Running".
    """

    type: Literal["categories"] = "categories"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    def build(self) -> Rule:
        def paths(names: list[str]) -> tuple[str, ...]:
            return tuple(p for p in (_normalise_path(n) for n in names) if p)

        return PrefixFilter("category", paths(self.include), paths(self.exclude), "categories")


class BrandsConfig(_RuleConfig):
    """Keep only `include` brands (if any), then drop `exclude` ones; case is ignored."""

    type: Literal["brands"] = "brands"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    def build(self) -> Rule:
        def names(values: list[str]) -> tuple[str, ...]:
            return tuple(v.strip().casefold() for v in values if v.strip())

        return PrefixFilter("brand", names(self.include), names(self.exclude), "brands")


class PriceRangeConfig(_RuleConfig):
    """Keep prices in [min, max]; items without a price go."""

    type: Literal["price_range"] = "price_range"
    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> PriceRangeConfig:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def build(self) -> Rule:
        return PriceRange(self.min, self.max)


class ExpressionConfig(_RuleConfig):
    """Keep items for which `expression` holds (see nextbuy.pipeline.expression)."""

    type: Literal["expression"] = "expression"
    expression: str

    @field_validator("expression")
    @classmethod
    def _parses(cls, text: str) -> str:
        try:
            compile_expression(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return text

    def build(self) -> Rule:
        return ExpressionFilter(compile_expression(self.expression))


class BoostMarginConfig(_RuleConfig):
    """score × (1 + weight × margin)."""

    type: Literal["boost_margin"] = "boost_margin"
    weight: float = 1.0

    def build(self) -> Rule:
        return BoostMargin(self.weight)


class BoostNewConfig(_RuleConfig):
    """score × factor for items created within `days`."""

    type: Literal["boost_new"] = "boost_new"
    days: float = Field(default=14.0, gt=0)
    factor: float = Field(default=1.5, gt=0)

    def build(self) -> Rule:
        return BoostNew(self.days, self.factor)


class PromoteConfig(_RuleConfig):
    """Up to `slots` of `items` at `positions` (1-based; default the top places)."""

    type: Literal["promote"] = "promote"
    items: list[str] = Field(min_length=1)
    slots: int = Field(default=1, ge=1)
    positions: list[Annotated[int, Field(ge=1)]] | None = None

    @model_validator(mode="after")
    def _enough_positions(self) -> PromoteConfig:
        if self.positions is not None and len(self.positions) < self.slots:
            raise ValueError(f"positions name {len(self.positions)} places for {self.slots} slots")
        return self

    def build(self) -> Rule:
        positions = None if self.positions is None else tuple(self.positions)
        return Promote(tuple(dict.fromkeys(self.items)), self.slots, positions)


class DiversityConfig(_RuleConfig):
    """MMR re-ordering with a λ, and strict caps per category (`by`) and per brand."""

    type: Literal["diversity"] = "diversity"
    mmr_lambda: float = Field(default=0.7, ge=0, le=1)
    max_per_category: int | None = Field(default=None, ge=1)
    max_per_brand: int | None = Field(default=None, ge=1)
    by: Literal["category", "top_category"] = "top_category"

    def build(self) -> Rule:
        return Diversity(self.mmr_lambda, self.max_per_category, self.max_per_brand, self.by)


class DiscoveryConfig(_RuleConfig):
    """A `share` of the k slots for categories outside the user's usual ones."""

    type: Literal["discovery"] = "discovery"
    share: float = Field(default=0.2, ge=0, le=1)
    by: Literal["category", "top_category"] = "top_category"

    def build(self) -> Rule:
        return Discovery(self.share, self.by)


RuleConfig = Annotated[
    ExcludePurchasedConfig
    | ExcludeUnavailableConfig
    | CategoriesConfig
    | BrandsConfig
    | PriceRangeConfig
    | ExpressionConfig
    | BoostMarginConfig
    | BoostNewConfig
    | PromoteConfig
    | DiversityConfig
    | DiscoveryConfig,
    Field(discriminator="type"),
]
_BOOSTS = ("boost_margin", "boost_new")


class PlacementConfig(BaseModel):
    """One placement (home page, product page, ...): list length, candidates, rules."""

    # Frozen: the defaults are shared between Settings objects.
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=10, ge=1, le=1000)
    candidates: int = Field(default=200, ge=1, le=100_000)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> PlacementConfig:
        if self.candidates < self.k:
            raise ValueError(f"candidates ({self.candidates}) must be at least k ({self.k})")
        types = [rule.type for rule in self.rules]
        if "diversity" in types:
            late = [t for t in types[types.index("diversity") :] if t in _BOOSTS]
            if late:
                raise ValueError(f"{late[0]} after diversity would undo it; put boosts first")
        return self

    def build(self) -> list[Rule]:
        return build_rules(self.rules)


def build_rules(configs: Sequence[RuleConfig]) -> list[Rule]:
    """Rule objects for `configs`, in the same order; cheap, so a config reload rebuilds them."""
    return [config.build() for config in configs]


# Defaults per placement; a nextbuy.toml [placements.NAME] replaces that one placement only.
DEFAULT_PLACEMENTS: dict[str, PlacementConfig] = {
    # Personal picks on the home page: a mix of departments; nothing bought this month,
    # unless the shop's customers buy again (then the lists repeat purchases on purpose).
    "home": PlacementConfig(
        k=10,
        rules=[
            ExcludePurchasedConfig(days=30, when="discovery"),
            ExcludeUnavailableConfig(),
            DiversityConfig(mmr_lambda=0.7, max_per_category=3),
        ],
    ),
    # Similar and bought-together items: same category is the point, so cap brands only.
    "product_page": PlacementConfig(
        k=10,
        rules=[
            ExcludePurchasedConfig(days=30),
            ExcludeUnavailableConfig(),
            DiversityConfig(mmr_lambda=1.0, max_per_brand=4),
        ],
    ),
    # Cross-sell beside the basket: few slots, each from a different department.
    "cart": PlacementConfig(
        k=6,
        rules=[
            ExcludePurchasedConfig(days=7),
            ExcludeUnavailableConfig(),
            DiversityConfig(mmr_lambda=0.5, max_per_category=2, by="category"),
        ],
    ),
    # A newsletter read days later: news first, one discovery; nothing bought in a quarter,
    # unless the shop's customers buy again.
    "email": PlacementConfig(
        k=6,
        candidates=300,
        rules=[
            ExcludePurchasedConfig(days=90, when="discovery"),
            ExcludeUnavailableConfig(),
            BoostNewConfig(days=14, factor=1.2),
            DiversityConfig(mmr_lambda=0.6, max_per_category=2),
            DiscoveryConfig(share=0.2),
        ],
    ),
}


def with_default_placements(
    placements: Mapping[str, PlacementConfig],
) -> dict[str, PlacementConfig]:
    """The configured placements over the defaults, so configuring one keeps the others."""
    return {**DEFAULT_PLACEMENTS, **placements}
