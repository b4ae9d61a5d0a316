"""What every request reads, as one immutable object swapped by a single reference.

A request takes `state.live` once and uses only that object, so a model swap, a catalogue
change or a rules reload in another thread never shows it half of an update: the model,
the catalogue its indices refer to and the rules always belong together.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from nextbuy.data.schema import category_levels
from nextbuy.rules import PlacementConfig
from nextbuy.rules.catalog import DAY_MS, ItemCatalog
from nextbuy.serving.snapshot import ServingModel

if TYPE_CHECKING:
    from nextbuy.engine import Engine
    from nextbuy.store.base import Store

FRESH_DEPTH = 200  # new arrivals kept, newest first
CATEGORY_DEPTH = 500  # best sellers kept per category


@dataclass(frozen=True)
class Placement:
    """A placement's configuration and the rule objects built from it."""

    name: str
    k: int
    candidates: int
    rules: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Live:
    model: ServingModel
    catalog: ItemCatalog
    placements: dict[str, Placement]
    new_arrival_days: float
    fresh: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def create(
        cls,
        model: ServingModel,
        catalog: ItemCatalog,
        placements: dict[str, Placement],
        new_arrival_days: float,
    ) -> Live:
        live = cls(model, catalog, placements, new_arrival_days)
        return live.refreshed()

    def refreshed(self, now_ms: float | None = None) -> Live:
        """The same, with the new-arrival list measured at `now_ms` (or now)."""
        now = time.time() * 1000.0 if now_ms is None else now_ms
        return replace(self, fresh=new_arrivals(self.catalog, now, self.new_arrival_days))

    def with_catalog(self, catalog: ItemCatalog) -> Live:
        return replace(self, catalog=catalog).refreshed()

    def with_placements(self, placements: dict[str, Placement]) -> Live:
        return replace(self, placements=placements)

    # -- derived lists, built on first use for this catalogue ------------------------------------
    @cached_property
    def popularity(self) -> np.ndarray:
        """Popularity per catalogue index (items the model never saw: 0)."""
        out = np.zeros(len(self.catalog), np.float32)
        n = min(self.model.n_items, len(out))
        out[:n] = self.model.popularity[:n]
        return out

    @cached_property
    def bestsellers(self) -> dict[str, tuple[str, np.ndarray]]:
        """Per category path and top-level category (case-folded key): its name as the
        catalogue spells it and its best sellers, best first."""
        out: dict[str, tuple[str, np.ndarray]] = {}
        for codes, vocab in (
            (self.catalog.category_code, self.catalog.category_vocab),
            (self.catalog.top_category_code, self.catalog.top_category_vocab),
        ):
            for name, items in _ranked_groups(codes, vocab, self.popularity).items():
                out.setdefault(_key(str(name)), (str(name), items))  # a path wins a tie
        return out

    @cached_property
    def new_items(self) -> Any:
        """Items added since training, encoded for the model's own request path (None
        without one, or when nothing is new)."""
        path = self.model.model.request_path()
        return None if path is None else path.new_items(self.catalog)

    def category_items(self, category: str) -> np.ndarray:
        """Best sellers of a category path or top-level category (unknown: none)."""
        found = self.bestsellers.get(_key(category))
        return found[1] if found is not None else np.zeros(0, np.int64)

    def category_name(self, category: str) -> str:
        """The catalogue's spelling of a category a request named."""
        found = self.bestsellers.get(_key(category))
        return found[0] if found is not None else category


def _key(category: str) -> str:
    """Case and spacing around ">" ignored: "home>kitchen" finds "Home > Kitchen"."""
    levels = category_levels(category)
    return levels[-1].casefold() if levels else ""


def new_arrivals(catalog: ItemCatalog, now_ms: float, days: float) -> np.ndarray:
    """Available items created within `days` of now, newest first."""
    created = catalog.created_at_ms
    with np.errstate(invalid="ignore"):
        recent = (created >= now_ms - days * DAY_MS) & (created <= now_ms + DAY_MS)
    recent &= catalog.available
    found = np.flatnonzero(recent)
    order = np.argsort(-created[found], kind="stable")
    return found[order][:FRESH_DEPTH].astype(np.int64)


def _ranked_groups(
    codes: np.ndarray, vocab: np.ndarray, popularity: np.ndarray
) -> dict[Any, np.ndarray]:
    """Items of each code with popularity > 0, most popular first."""
    has = np.flatnonzero((codes >= 0) & (popularity > 0))
    if not len(has):
        return {}
    order = has[np.lexsort((has, -popularity[has], codes[has]))]
    sorted_codes = codes[order]
    bounds = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
    return {
        vocab[sorted_codes[lo]]: order[lo : min(hi, lo + CATEGORY_DEPTH)].astype(np.int64)
        for lo, hi in itertools.pairwise(bounds)
    }


def build_placements(configs: dict[str, PlacementConfig]) -> dict[str, Placement]:
    return {
        name: Placement(name, config.k, config.candidates, tuple(config.build()))
        for name, config in configs.items()
    }


def load_catalog(store: Store, engine: Engine, item_ids: np.ndarray) -> ItemCatalog:
    """The store's catalogue over the model's items.

    Once a shop has a catalogue, it decides what may be recommended: a trained item that is
    not (or no longer) in it, e.g. deleted through the API, is unavailable. Without any
    catalogue every trained item is.
    """
    items = store.serving_items()
    if items.empty:
        return ItemCatalog.from_frame(engine.items, item_ids)
    catalog = ItemCatalog.from_frame(items, item_ids)
    listed = np.zeros(len(catalog), bool)
    listed[[catalog.index[i] for i in items["item_id"].astype(str)]] = True
    if listed.all():
        return catalog
    return replace(
        catalog,
        listed=catalog.listed & listed,
        available=catalog.available & listed,
        _masks={},
    )
