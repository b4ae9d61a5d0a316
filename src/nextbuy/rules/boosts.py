"""Rules that re-weight scores: margin and new-arrival boosts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextbuy.rules.base import REASON_NEW, Candidates, RequestContext
from nextbuy.rules.catalog import DAY_MS, ItemCatalog


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
        return resorted(boosted(cands, factor))


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
        raised = boosted(cands, np.where(new, self.factor, 1.0))
        # A generator's reason ("because you bought X") says more than "new", so keep it.
        fresh = np.flatnonzero(new)
        fresh = fresh[np.equal(raised.reasons[fresh], None)]
        if len(fresh):
            raised.reasons = raised.reasons.copy()
            raised.reasons[fresh] = REASON_NEW
        return resorted(raised)


def boosted(cands: Candidates, factor: np.ndarray) -> Candidates:
    # s + |s|(f - 1) is s × f for positive scores and still moves a negative score the
    # boost's way (some models score below zero); order is what matters downstream.
    scores = cands.scores
    if len(scores) and scores.min() >= 0:
        scores = scores * factor
    else:
        scores = scores + np.abs(scores) * (factor - 1.0)
    return Candidates(cands.items, scores, cands.reasons, cands.origin, cands.pinned)


def resorted(cands: Candidates) -> Candidates:
    """Best score first, pinned items left at their positions."""
    if cands.pinned is None or not cands.pinned.any():
        return cands.take(np.argsort(-cands.scores, kind="stable"))
    free = np.flatnonzero(~cands.pinned)
    order = np.arange(len(cands))
    order[free] = free[np.argsort(-cands.scores[free], kind="stable")]
    return cands.take(order)
