"""Rules that place items at fixed positions: promotions and discovery slots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from nextbuy.rules.base import (
    REASON_DISCOVERY,
    REASON_PROMOTED,
    USUAL_SHARE,
    Admit,
    Candidates,
    RequestContext,
    appended,
    positions_in,
)
from nextbuy.rules.catalog import ItemCatalog


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
            cands = appended(cands, np.array(joining, np.int64), origin="promoted")
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
