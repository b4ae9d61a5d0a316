"""What every rule works on: the candidates of one request, its context, the Rule protocol
and the array helpers the rules share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from nextbuy.data.schema import category_levels
from nextbuy.rules.catalog import ItemCatalog

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
            items[order], scores[order], objects(len(items), None), objects(len(items), origin)
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


# -- small helpers --------------------------------------------------------------------------
def normalise_path(path: str) -> str:
    """'shoes>Running ' -> 'shoes > running', as the catalogue spaces its paths, case-folded."""
    levels = category_levels(path)
    return levels[-1].casefold() if levels else ""


def objects(n: int, value: object) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def isin_sorted(items: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
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


def appended(cands: Candidates, items: np.ndarray, origin: str) -> Candidates:
    fill = cands.scores[-1] if len(cands) else 0.0
    return Candidates(
        np.concatenate([cands.items, items]),
        np.concatenate([cands.scores, np.full(len(items), fill)]),
        np.concatenate([cands.reasons, objects(len(items), None)]),
        np.concatenate([cands.origin, objects(len(items), origin)]),
        None
        if cands.pinned is None
        else np.concatenate([cands.pinned, np.zeros(len(items), bool)]),
    )
