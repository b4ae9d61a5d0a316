"""MMR re-ordering with caps per category and brand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from nextbuy.rules.base import MMR_POOL, Candidates, RequestContext
from nextbuy.rules.catalog import ItemCatalog


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
