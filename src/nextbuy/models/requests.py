"""A model's own request path: for models that answer a request with more than the scores
of a candidate pool (their own candidates, features of the request, reasons from a ranker,
items added since training).

Serving asks `Recommender.request_path()`. Most models have none and are served by their
precomputed lists, `pool_scores` and `contributions`; a model that has one (the hybrid
pipeline) keeps every detail of it in its own package, and serving never learns its class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from nextbuy.rules.catalog import ItemCatalog


@dataclass(frozen=True)
class RankingContext:
    """Where a recommendation is asked for: what a context-aware ranker reads."""

    device: str | None = None
    placement: str | None = None


class RecentEvent(Protocol):
    """What a shopper did since training, oldest first."""

    @property
    def item_id(self) -> str: ...

    @property
    def event_type(self) -> str: ...

    @property
    def ts_ms(self) -> int: ...


class ShopperView(Protocol):
    """The shopper a request is for, as a request path reads it (indices are the catalogue's,
    whose first ones are the model's)."""

    @property
    def trained(self) -> bool:
        """A trained history row exists and may be read (not erased, consent given)."""
        ...

    @property
    def user_id(self) -> str | None: ...

    @property
    def cols(self) -> np.ndarray:
        """Items of the history (trained and since), as model indices."""
        ...

    @property
    def history(self) -> np.ndarray:
        """Items of the history, newest first."""
        ...

    @property
    def recent(self) -> Sequence[RecentEvent]: ...


@dataclass
class Ranking:
    """A request path's list for one shopper, and what its reasons may reuse."""

    items: np.ndarray  # catalogue indices, best first
    scores: np.ndarray
    generated_ahead: bool  # the candidates were ready before the request came
    state: Any = None


class RequestPath(Protocol):
    @property
    def reads_context(self) -> bool:
        """Whether the request's device and placement can change the ranking."""
        ...

    def precomputed_lists(self, user_ids: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores) of each trained user's top n, -1 padded: the lists served while
        nothing has happened since training."""
        ...

    def rank(
        self,
        shopper: ShopperView,
        key: str,
        n: int,
        exclude_seen: bool,
        context: RankingContext | None,
        catalog: ItemCatalog,
        new: Any,
    ) -> Ranking:
        """The n best items for this shopper on this request (`key` names the shopper's
        cached candidates; `new` is what `new_items` gave for the catalogue)."""
        ...

    def reasons(
        self,
        shopper: ShopperView,
        items: list[int],
        ranking: Ranking | None,
        catalog: ItemCatalog,
        new: Any,
    ) -> dict[int, str]:
        """Catalogue index → reason in plain words (lower case first), for listed items."""
        ...

    def new_items(self, catalog: ItemCatalog) -> Any:
        """The catalogue's available items beyond the model's, encoded for it (None: none)."""
        ...

    def similar_with_new(
        self, item: int, items: np.ndarray, scores: np.ndarray, n: int, new: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's neighbours of `item` with the new items like it merged in."""
        ...

    def new_item_neighbours(
        self, item: int, n: int, new: Any
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Trained items like a new item (None when the model cannot say)."""
        ...

    def prepare(self, key: str, shopper: ShopperView, between: Callable[[], None]) -> bool:
        """Generate the shopper's candidates ahead of their next request; whether it did."""
        ...

    def forget(self, key: str) -> None:
        """Drop what was prepared for this shopper (erased, or gone)."""
        ...

    def keep_at_most(self, shoppers: int) -> None:
        """How many shoppers' prepared candidates to keep."""
        ...
