"""`apply_rules`: the filters as one mask, then the other rules in order, then the k results."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nextbuy.rules.base import Candidates, Filter, RequestContext, Rule
from nextbuy.rules.boosts import BoostMargin, BoostNew
from nextbuy.rules.catalog import ItemCatalog
from nextbuy.rules.diversity import Diversity
from nextbuy.rules.placing import Discovery, Promote


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

    cands = unique(cands)
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
    cands = unique(cands)
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


def unique(cands: Candidates) -> Candidates:
    """Keeps the first (best) occurrence of each item."""
    ordered = np.sort(cands.items)
    if not (ordered[1:] == ordered[:-1]).any():  # the usual case, at a third of np.unique
        return cands
    _, first = np.unique(cands.items, return_index=True)
    if len(first) == len(cands):
        return cands
    return cands.take(np.sort(first))


_BUILT_IN = (Filter, BoostMargin, BoostNew, Promote, Diversity, Discovery)
