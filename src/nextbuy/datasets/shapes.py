"""Synthetic shops of other shapes than the bundled sample, each with a planted truth.

The model choice must work on data nobody tuned it on, so it is tested on shops that differ
from Online Retail and MovieLens in the ways real shops do:

- "grocery": heavy repeat buying (each customer keeps a basket of staples), short histories,
  strong best sellers, purchases dated by day without a time, a thin catalogue (aisle only);
- "sparse_catalogue": tens of thousands of products with a flat long tail, views before
  purchases, categories and brands, little repeat buying;
- "no_attributes": a catalogue of ids only (no category, brand or text);
- "few_events": most customers with one to three events, many of them new.

The planted truth is the same everywhere: customers have a taste over latent aisles, items a
Zipf popularity (some of it seasonal), customers buy again from their staples with a
propensity of their own (recent purchases more than old ones: a staple list drifts), and an
item has a complement that is often bought with it, in the same order or the next one (pasta,
then sauce); shapes differ in sizes and rates. Same arguments, same data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from nextbuy.datasets.shop import ShopData
from nextbuy.errors import ConfigError

DAY = pd.Timedelta(days=1)
SEASONS = 4


@dataclass(frozen=True)
class ShapeSpec:
    """The knobs of one shape (see the module docstring for what each shape stands for)."""

    n_users: int
    n_items: int
    n_aisles: int = 30
    days: int = 180
    orders_per_user: float = 3.0  # mean, at least one
    lines_per_order: float = 6.0  # mean, at least one
    repeat_rate: float = 0.2  # mean share of a customer's lines that are staples bought again
    staples: float = 8.0  # mean number of staples per customer
    taste_share: float = 0.7  # of new lines, drawn from the customer's aisles (else best sellers)
    taste_concentration: float = 0.3  # Dirichlet α of the aisle taste: lower, narrower
    popularity_exponent: float = 0.9  # Zipf
    seasonal_share: float = 0.15  # items whose popularity peaks in one season
    views_per_order: float = 0.0  # views before each order, of items from the aisles bought
    day_only: bool = False
    catalogue: str = "full"  # full (aisle, shelf, brand, title) | aisles | none
    active_days: float = 60.0  # mean span of a customer's orders
    complement_rate: float = 0.3  # of lines, followed by the item's complement
    complement_same_order: float = 0.5  # else the complement comes with the next order
    recent_repeat: float = 0.5  # of repeat lines, an item of the customer's previous order


SHAPES: dict[str, ShapeSpec] = {
    "grocery": ShapeSpec(
        n_users=6_000,
        n_items=2_000,
        orders_per_user=3.0,
        lines_per_order=8.0,
        repeat_rate=0.6,
        staples=10.0,
        popularity_exponent=1.1,
        day_only=True,
        catalogue="aisles",
        active_days=45.0,
    ),
    "sparse_catalogue": ShapeSpec(
        n_users=8_000,
        n_items=30_000,
        n_aisles=200,
        orders_per_user=4.0,
        lines_per_order=2.0,
        repeat_rate=0.05,
        staples=3.0,
        taste_concentration=0.01,  # a customer keeps to a few of the 200 aisles
        popularity_exponent=0.7,
        views_per_order=3.0,
    ),
    "no_attributes": ShapeSpec(
        n_users=5_000, n_items=3_000, repeat_rate=0.25, catalogue="none", lines_per_order=4.0
    ),
    "few_events": ShapeSpec(
        n_users=20_000,
        n_items=2_000,
        orders_per_user=1.3,
        lines_per_order=1.5,
        repeat_rate=0.1,
        staples=2.0,
        active_days=20.0,
    ),
}


def shaped_shop(shape: str, seed: int = 0, scale: float = 1.0) -> ShopData:
    """A shop of this shape; `scale` multiplies the numbers of customers and items."""
    return _generator(shape, seed, scale).shop(f"shape-{shape}")


def planted_complements(shape: str, seed: int = 0, scale: float = 1.0) -> dict[str, str]:
    """Each item's planted complement in the shop `shaped_shop` makes with these arguments."""
    generator = _generator(shape, seed, scale)
    ids = np.char.add("p", np.arange(generator.spec.n_items).astype(str))
    return dict(zip(ids.tolist(), ids[generator.complement].tolist(), strict=True))


def _generator(shape: str, seed: int, scale: float) -> _Generator:
    spec = SHAPES.get(shape)
    if spec is None:
        raise ConfigError(f"unknown shop shape {shape!r}; known: {', '.join(SHAPES)}")
    if scale != 1.0:
        spec = replace(
            spec,
            n_users=max(50, round(spec.n_users * scale)),
            n_items=max(spec.n_aisles * 3, round(spec.n_items * scale)),
        )
    return _Generator(spec, np.random.default_rng([seed, 17]))


class _Generator:
    def __init__(self, spec: ShapeSpec, rng: np.random.Generator) -> None:
        self.spec, self.rng = spec, rng
        n = spec.n_items
        self.aisle = rng.integers(0, spec.n_aisles, n)
        self.aisle[: spec.n_aisles] = np.arange(spec.n_aisles)  # every aisle has an item
        ranks = rng.permutation(n) + 1
        base = 1.0 / ranks**spec.popularity_exponent
        peak = rng.integers(0, SEASONS, n)
        seasonal = rng.random(n) < spec.seasonal_share
        boost = np.ones((SEASONS, n))
        boost[peak[seasonal], np.flatnonzero(seasonal)] = 5.0
        self.popularity = base[None, :] * boost  # (season, item)
        self.taste = rng.dirichlet(np.full(spec.n_aisles, spec.taste_concentration), spec.n_users)
        self.complement = self._complements()

    def _complements(self) -> np.ndarray:
        """Each item's complement, anywhere in the catalogue, popular ones likelier (by the
        square root of popularity, so the long tail has complements to find too)."""
        cdf = np.cumsum(np.sqrt(self.popularity[0]))
        pick = np.searchsorted(cdf, self.rng.random(self.spec.n_items) * cdf[-1])
        pick = np.minimum(pick, self.spec.n_items - 1)
        itself = pick == np.arange(self.spec.n_items)
        pick[itself] = (pick[itself] + 1) % self.spec.n_items
        return pick

    # -- draws ----------------------------------------------------------------------------
    def _season(self, days: np.ndarray) -> np.ndarray:
        return np.minimum(days * SEASONS // self.spec.days, SEASONS - 1).astype(np.int64)

    def _popular(self, seasons: np.ndarray) -> np.ndarray:
        """One item per draw, by its season's overall popularity."""
        out = np.empty(len(seasons), np.int64)
        for season in range(SEASONS):
            at = np.flatnonzero(seasons == season)
            cdf = np.cumsum(self.popularity[season])
            out[at] = np.searchsorted(cdf, self.rng.random(len(at)) * cdf[-1])
        return np.minimum(out, self.spec.n_items - 1)

    def _tasteful(self, users: np.ndarray, seasons: np.ndarray) -> np.ndarray:
        """One item per draw: an aisle from the customer's taste, then an item of that aisle
        by its season's popularity."""
        cum = np.cumsum(self.taste[users], axis=1)
        aisles = (cum < self.rng.random(len(users))[:, None]).sum(axis=1)
        return self._in_aisles(np.minimum(aisles, self.spec.n_aisles - 1), seasons)

    def _in_aisles(self, aisles: np.ndarray, seasons: np.ndarray) -> np.ndarray:
        """One item of each draw's aisle, by its season's popularity."""
        out = np.empty(len(aisles), np.int64)
        for season in range(SEASONS):
            for aisle in np.unique(aisles[seasons == season]):
                at = np.flatnonzero((seasons == season) & (aisles == aisle))
                members = np.flatnonzero(self.aisle == aisle)
                cdf = np.cumsum(self.popularity[season, members])
                pick = np.searchsorted(cdf, self.rng.random(len(at)) * cdf[-1])
                out[at] = members[np.minimum(pick, len(members) - 1)]
        return out

    def _new_items(self, users: np.ndarray, days: np.ndarray) -> np.ndarray:
        seasons = self._season(days)
        taste = self.rng.random(len(users)) < self.spec.taste_share
        out = self._popular(seasons)
        out[taste] = self._tasteful(users[taste], seasons[taste])
        return out

    # -- the shop -------------------------------------------------------------------------
    def shop(self, name: str) -> ShopData:
        spec, rng = self.spec, self.rng
        users = np.arange(spec.n_users)
        n_staples = 1 + rng.poisson(max(spec.staples - 1, 0), spec.n_users)
        staples = self._new_items(np.repeat(users, n_staples), np.zeros(n_staples.sum(), int))
        staple_start = np.concatenate([[0], np.cumsum(n_staples)[:-1]])
        repeat_rate = rng.beta(2.0, 2.0 * (1 - spec.repeat_rate) / spec.repeat_rate, spec.n_users)
        order_user, order_day = self._orders()
        lines = 1 + rng.poisson(max(spec.lines_per_order - 1, 0), len(order_user))
        line_user = np.repeat(order_user, lines)
        line_order = np.repeat(np.arange(len(order_user)), lines)
        line_day = np.repeat(order_day, lines)
        repeat = rng.random(len(line_user)) < repeat_rate[line_user]
        # staples are bought by how much they matter to the customer: the first ones most
        pick = np.floor(rng.random(len(line_user)) ** 2 * n_staples[line_user]).astype(np.int64)
        items = self._new_items(line_user, line_day)
        items[repeat] = staples[staple_start[line_user[repeat]] + pick[repeat]]
        self._repeat_recent(items, repeat, order_user, lines)
        line_order, line_day, items = self._with_complements(
            order_user, order_day, line_order, items
        )
        events = self._events(order_user[line_order], line_order, line_day, items)
        return ShopData(name, events, self._catalogue(), None)

    def _repeat_recent(
        self, items: np.ndarray, repeat: np.ndarray, order_user: np.ndarray, lines: np.ndarray
    ) -> None:
        """Some repeat lines buy again an item of the customer's previous order, order by
        order (an order's items must be final before the next one copies from them)."""
        first_line = np.concatenate([[0], np.cumsum(lines)[:-1]])
        follows = np.concatenate([[False], order_user[1:] == order_user[:-1]])
        index = np.arange(len(order_user))
        rank = index - np.maximum.accumulate(np.where(follows, 0, index))
        line_rank = np.repeat(rank, lines)
        line_order = np.repeat(np.arange(len(order_user)), lines)
        recent = repeat & (self.rng.random(len(items)) < self.spec.recent_repeat)
        for r in range(1, int(rank.max(initial=0)) + 1):
            at = np.flatnonzero(recent & (line_rank == r))
            before = line_order[at] - 1
            offset = np.floor(self.rng.random(len(at)) * lines[before]).astype(np.int64)
            items[at] = items[first_line[before] + offset]

    def _with_complements(
        self,
        order_user: np.ndarray,
        order_day: np.ndarray,
        line_order: np.ndarray,
        items: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Add each followed line's complement to the same order or the customer's next one."""
        spec, rng = self.spec, self.rng
        followed = np.flatnonzero(rng.random(len(items)) < spec.complement_rate)
        target = line_order[followed].copy()
        has_next = np.append(order_user[1:] == order_user[:-1], False)
        later = (rng.random(len(followed)) >= spec.complement_same_order) & has_next[target]
        target[later] += 1
        all_orders = np.concatenate([line_order, target])
        all_items = np.concatenate([items, self.complement[items[followed]]])
        keep = np.argsort(all_orders, kind="stable")
        return all_orders[keep], order_day[all_orders[keep]], all_items[keep]

    def _orders(self) -> tuple[np.ndarray, np.ndarray]:
        """Each order's customer and day, a customer's orders together and by day."""
        spec, rng = self.spec, self.rng
        n_orders = rng.geometric(1.0 / spec.orders_per_user, spec.n_users)
        life = rng.exponential(spec.active_days, spec.n_users)
        start = rng.uniform(0, spec.days, spec.n_users)
        users = np.repeat(np.arange(spec.n_users), n_orders)
        offsets = rng.random(len(users)) * np.repeat(life, n_orders)
        first = np.concatenate([[0], np.cumsum(n_orders)[:-1]])
        offsets[first] = 0.0  # a customer's first order opens their active span
        days = np.floor(np.repeat(start, n_orders) + offsets).astype(np.int64)
        keep = days < spec.days
        users, days = users[keep], days[keep]
        order = np.lexsort((days, users))
        return users[order], days[order]

    def _events(
        self, users: np.ndarray, orders: np.ndarray, days: np.ndarray, items: np.ndarray
    ) -> pd.DataFrame:
        spec, rng = self.spec, self.rng
        start = pd.Timestamp("2025-01-01", tz="UTC")
        seconds = (
            np.zeros(len(users)) if spec.day_only else rng.integers(8 * 3600, 22 * 3600, len(users))
        )
        purchases = pd.DataFrame(
            {
                "user_id": np.char.add("c", users.astype(str)),
                "item_id": np.char.add("p", items.astype(str)),
                "event_type": "purchase",
                "timestamp": start + pd.to_timedelta(days * 86_400 + seconds, unit="s"),
                "order_id": np.char.add("o", orders.astype(str)),
                "quantity": 1.0,
            }
        )
        if spec.views_per_order <= 0:
            return purchases.sort_values("timestamp", kind="stable").reset_index(drop=True)
        per_line = rng.poisson(spec.views_per_order / max(spec.lines_per_order, 1.0), len(users))
        at = np.repeat(np.arange(len(users)), per_line)
        # shoppers look at alternatives from the aisle of what they then buy
        viewed = self._in_aisles(self.aisle[items[at]], self._season(days[at]))
        views = pd.DataFrame(
            {
                "user_id": purchases["user_id"].to_numpy()[at],
                "item_id": np.char.add("p", viewed.astype(str)),
                "event_type": "view",
                "timestamp": purchases["timestamp"].to_numpy()[at] - pd.Timedelta(minutes=5),
                "order_id": None,
                "quantity": np.nan,
            }
        )
        events = pd.concat([views, purchases], ignore_index=True)
        return events.sort_values("timestamp", kind="stable").reset_index(drop=True)

    def _catalogue(self) -> pd.DataFrame | None:
        spec = self.spec
        ids = np.char.add("p", np.arange(spec.n_items).astype(str))
        if spec.catalogue == "none":
            return pd.DataFrame({"item_id": ids})
        aisles = np.char.add("Aisle ", self.aisle.astype(str))
        if spec.catalogue == "aisles":
            return pd.DataFrame({"item_id": ids, "category": aisles})
        shelf = self.rng.integers(0, 4, spec.n_items).astype(str)
        brand = (self.aisle * 7 + self.rng.integers(0, 3, spec.n_items)) % 97
        return pd.DataFrame(
            {
                "item_id": ids,
                "title": np.char.add(np.char.add("Product ", ids), np.char.add(" from ", aisles)),
                "category": np.char.add(np.char.add(aisles, " > Shelf "), shelf),
                "brand": np.char.add("Brand ", brand.astype(str)),
                "price": np.round(self.rng.lognormal(1.5, 0.6, spec.n_items), 2),
            }
        )
