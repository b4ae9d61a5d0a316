"""A synthetic shop whose customers have a known, planted taste.

Each user has a Dirichlet preference over top-level categories, a few preferred brands and a
price level; items have a category, a brand, a price level and a long-tailed (Zipf-like)
popularity. Sessions are views, some of which go to the cart, some of which are bought, and
every viewed item is drawn either from the user's taste or from global popularity. Because
the generating distribution is known exactly, tests can check that a model recovers it.

Events stream in chunks built with vectorised numpy, so 50 million events need no more
memory than one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from nextbuy.data.schema import INTERACTION_COLUMNS
from nextbuy.datasets.shop import ShopData

EVENT_TYPES: tuple[str, ...] = ("view", "add_to_cart", "purchase")
VIEW, CART, PURCHASE = 0, 1, 2
PRICE_LEVELS: tuple[str, ...] = ("budget", "mid", "premium")
# Row l: how a user of price level l spreads views over item price levels.
LEVEL_PREFERENCE = np.array([[0.7, 0.25, 0.05], [0.2, 0.6, 0.2], [0.05, 0.25, 0.7]])
LEVEL_LOG_OFFSET = np.array([-0.7, 0.0, 0.7])
# Monday..Sunday before scaling by weekly_amplitude: shoppers browse more at the weekend.
WEEKLY_SHAPE = np.array([-0.15, -0.2, -0.15, -0.05, 0.1, 0.25, 0.2])
# Share of traffic per hour of day: quiet nights, an evening peak.
HOURLY_SHAPE = np.array(
    [3, 2, 1, 1, 1, 2, 3, 5, 6, 7, 7, 7, 8, 7, 7, 7, 7, 8, 9, 10, 10, 9, 7, 5], dtype=float
)
YEARLY_PEAK_DAY = 335  # early December
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
CSV_COLUMNS: tuple[str, ...] = INTERACTION_COLUMNS[: INTERACTION_COLUMNS.index("order_id") + 1]
MS_PER_DAY = 86_400_000
SESSIONS_PER_BLOCK = 50_000


@dataclass(frozen=True)
class GroundTruth:
    """The planted latent structure, by user and item index (user i is id f"u{i}")."""

    user_taste: np.ndarray  # (n_users, n_categories), rows sum to 1
    user_brands: np.ndarray  # (n_users, brands_per_user) brand indices
    user_price_level: np.ndarray  # (n_users,) index into PRICE_LEVELS
    user_activity: np.ndarray  # (n_users,) share of sessions, sums to 1
    item_category: np.ndarray  # (n_items,) top-level category index
    item_brand: np.ndarray  # (n_items,)
    item_price_level: np.ndarray  # (n_items,)
    item_popularity: np.ndarray  # (n_items,) sums to 1

    def top_categories(self, user_index: int, n: int = 1) -> np.ndarray:
        return np.argsort(-self.user_taste[user_index], kind="stable")[:n]


class SyntheticShop:
    """A seeded shop: catalog, customers and an event stream drawn from a planted taste.

    Same arguments, same data: every random draw comes from a generator seeded by `seed`,
    and the event stream does not depend on the chunk size it is read in.
    """

    def __init__(
        self,
        n_users: int = 10_000,
        n_items: int = 2_000,
        n_categories: int = 20,
        n_brands: int = 50,
        seed: int = 0,
        *,
        n_subcategories: int = 3,
        start: str = "2024-01-01",
        days: int = 365,
        taste_concentration: float = 0.2,
        brands_per_user: int = 3,
        brand_boost: float = 4.0,
        popularity_exponent: float = 0.9,
        taste_share: float = 0.7,
        views_per_session: float = 4.0,
        cart_rate_taste: float = 0.3,
        cart_rate_browse: float = 0.08,
        purchase_rate: float = 0.5,
        guest_share: float = 0.0,
        weekly_amplitude: float = 1.0,
        yearly_amplitude: float = 0.4,
    ) -> None:
        _check_arguments(n_users, n_items, n_categories, n_brands, brands_per_user, days)
        self.n_users, self.n_items = n_users, n_items
        self.n_categories, self.n_brands = n_categories, n_brands
        self.n_subcategories = n_subcategories
        self.seed = seed
        self.start = pd.Timestamp(start, tz="UTC")
        self.days = days
        self.brand_boost = brand_boost
        self.taste_share = taste_share
        self.views_per_session = views_per_session
        self.cart_rate_taste, self.cart_rate_browse = cart_rate_taste, cart_rate_browse
        self.purchase_rate = purchase_rate
        self.guest_share = guest_share
        self.weekday_weights = np.clip(1.0 + weekly_amplitude * WEEKLY_SHAPE, 0.05, None)
        self.yearly_amplitude = yearly_amplitude

        rng = np.random.default_rng([seed, 0])
        self._make_items(rng, popularity_exponent)
        self._make_users(rng, taste_concentration, brands_per_user)
        self._hour_cdf = self._intensity_cdf()

    # -- the planted world -----------------------------------------------------------------
    def _make_items(self, rng: np.random.Generator, exponent: float) -> None:
        n, n_cells = self.n_items, self.n_categories * len(PRICE_LEVELS)
        # Every (category, price level) cell gets at least one item, so every draw has a target.
        cell = np.concatenate([np.arange(n_cells), rng.integers(0, n_cells, n - n_cells)])
        cell = rng.permutation(cell)
        self.item_category = cell // len(PRICE_LEVELS)
        self.item_price_level = cell % len(PRICE_LEVELS)
        self.item_subcategory = rng.integers(0, self.n_subcategories, n)
        self.item_brand = rng.integers(0, self.n_brands, n)
        ranks = rng.permutation(n) + 1
        popularity = 1.0 / ranks**exponent
        self.item_popularity = popularity / popularity.sum()
        self._pop_cdf = np.cumsum(self.item_popularity)

        self._cell = cell
        self._cell_order = np.argsort(cell, kind="stable")
        sorted_cells = cell[self._cell_order]
        self._cell_start = np.searchsorted(sorted_cells, np.arange(n_cells), side="left")
        self._cell_end = np.searchsorted(sorted_cells, np.arange(n_cells), side="right")
        self._cell_cum = np.cumsum(self.item_popularity[self._cell_order])
        before = np.concatenate([[0.0], self._cell_cum])
        self._cell_lo = before[self._cell_start]
        self._cell_mass = before[self._cell_end] - self._cell_lo

        category_log_price = rng.normal(np.log(25.0), 0.7, self.n_categories)
        log_price = (
            category_log_price[self.item_category]
            + LEVEL_LOG_OFFSET[self.item_price_level]
            + rng.normal(0.0, 0.2, n)
        )
        self.item_price = np.round(np.exp(log_price), 2)
        self.item_created_ms = self._start_ms - rng.integers(1, 730 * MS_PER_DAY, n)
        self.item_available = rng.random(n) > 0.05
        self.item_ids = np.array([f"i{i}" for i in range(n)], dtype=object)

    def _make_users(self, rng: np.random.Generator, concentration: float, n_brands: int) -> None:
        n = self.n_users
        # Dirichlet draws as normalised gammas, made in float32 to halve the memory at scale.
        self.user_taste = rng.standard_gamma(
            concentration, size=(n, self.n_categories), dtype=np.float32
        )
        # With a tiny concentration a row can underflow to all zeros; give it a uniform taste.
        empty = self.user_taste.sum(axis=1) <= 0
        self.user_taste[empty] = 1.0 / self.n_categories
        self.user_taste /= self.user_taste.sum(axis=1, keepdims=True)
        self.user_brands = _distinct_draws(rng, n, self.n_brands, n_brands)
        self.user_price_level = rng.integers(0, len(PRICE_LEVELS), n)
        activity = rng.lognormal(0.0, 1.0, n)
        self.user_activity = activity / activity.sum()
        self._activity_cdf = np.cumsum(self.user_activity)
        self.user_region = rng.integers(0, len(REGIONS), n)
        self.user_created_ms = self._start_ms - rng.integers(1, 730 * MS_PER_DAY, n)
        self.user_ids = np.array([f"u{i}" for i in range(n)], dtype=object)

    @property
    def _start_ms(self) -> int:
        return int(self.start.value // 1_000_000)

    def _intensity_cdf(self) -> np.ndarray:
        """Cumulative share of traffic at the end of each hour of the date range."""
        hours = pd.date_range(self.start, periods=self.days * 24, freq="h")
        weekly = self.weekday_weights[hours.day_of_week.to_numpy()]
        yearly = 1.0 + self.yearly_amplitude * np.cos(
            2 * np.pi * (hours.day_of_year.to_numpy() - YEARLY_PEAK_DAY) / 365.25
        )
        daily = HOURLY_SHAPE[hours.hour.to_numpy()]
        intensity = weekly * np.clip(yearly, 0.05, None) * daily
        cdf = np.cumsum(intensity)
        return cdf / cdf[-1]

    def ground_truth(self) -> GroundTruth:
        return GroundTruth(
            user_taste=self.user_taste,
            user_brands=self.user_brands,
            user_price_level=self.user_price_level,
            user_activity=self.user_activity,
            item_category=self.item_category,
            item_brand=self.item_brand,
            item_price_level=self.item_price_level,
            item_popularity=self.item_popularity,
        )

    def category_name(self, category: int) -> str:
        return f"Cat{category:02d}"

    # -- catalog and customers -------------------------------------------------------------
    def items(self) -> pd.DataFrame:
        """The catalog: ids, titles, "CatNN > SubM" paths, brands, prices, dates."""
        category = [
            f"{self.category_name(c)} > Sub{s}"
            for c, s in zip(self.item_category, self.item_subcategory, strict=True)
        ]
        brand = np.array([f"Brand{b:02d}" for b in range(self.n_brands)], dtype=object)
        item_brand = brand[self.item_brand]
        title = [
            f"{b} {c.replace(' > ', ' ')} {PRICE_LEVELS[lv]} item {i}"
            for i, (b, c, lv) in enumerate(
                zip(item_brand, category, self.item_price_level, strict=True)
            )
        ]
        return pd.DataFrame(
            {
                "item_id": self.item_ids,
                "title": title,
                "category": category,
                "brand": item_brand,
                "price": self.item_price,
                "available": self.item_available,
                "created_at": _utc_from_ms(self.item_created_ms),
            }
        )

    def users(self, onboarding_share: float = 0.0) -> pd.DataFrame:
        """Customers with a region and sign-up date; a share of them filled in onboarding.

        Onboarding answers tell the truth: the user's two favourite categories and the price
        range of their price level, so cold-start methods can be checked against it.
        """
        rng = np.random.default_rng([self.seed, 2])
        onboarded = rng.random(self.n_users) < onboarding_share
        onboarding = [self._onboarding(u) if on else None for u, on in enumerate(onboarded)]
        return pd.DataFrame(
            {
                "user_id": self.user_ids,
                "attributes": [{"region": REGIONS[r]} for r in self.user_region],
                "consent": True,
                "onboarding": onboarding,
                "created_at": _utc_from_ms(self.user_created_ms),
            }
        )

    def _onboarding(self, user: int) -> dict[str, object]:
        favourite = np.argsort(-self.user_taste[user], kind="stable")[:2]
        level = self.user_price_level[user]
        in_level = self.item_price[self.item_price_level == level]
        return {
            "categories": [self.category_name(int(c)) for c in favourite],
            "brands": [],
            "price_min": float(np.quantile(in_level, 0.1)),
            "price_max": float(np.quantile(in_level, 0.9)),
        }

    # -- planted truth ---------------------------------------------------------------------
    def user_index(self, user_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        index = pd.Index(self.user_ids).get_indexer(np.asarray(user_ids, dtype=object))
        if (index < 0).any():
            raise KeyError(f"unknown user id {np.asarray(user_ids)[index < 0][0]!r}")
        return index

    def true_affinity(
        self, user_ids: Sequence[str] | np.ndarray, event_type: str = "purchase"
    ) -> np.ndarray:
        """Exact probability of each item being the item of the user's next `event_type`.

        Rows sum to 1 and follow the item order of `items()`. "view" is the taste/popularity
        mixture every viewed item is drawn from; "add_to_cart" and "purchase" (the same
        distribution) weight the taste part up, since tasteful views are carted more often.
        """
        users = self.user_index(user_ids)
        taste = self._taste_probabilities(users)
        browse = self.item_popularity[None, :]
        if event_type == "view":
            share_taste, share_browse = self.taste_share, 1.0 - self.taste_share
        elif event_type in ("add_to_cart", "purchase"):
            share_taste = self.taste_share * self.cart_rate_taste
            share_browse = (1.0 - self.taste_share) * self.cart_rate_browse
        else:
            raise ValueError(f"event_type must be one of {', '.join(EVENT_TYPES)}")
        mixed = share_taste * taste + share_browse * browse
        return mixed / mixed.sum(axis=1, keepdims=True)

    def _taste_probabilities(self, users: np.ndarray) -> np.ndarray:
        """P(item | user, taste draw): category × price level × popularity-and-brand in cell."""
        brand_hot = np.zeros((len(users), self.n_brands), dtype=bool)
        np.put_along_axis(brand_hot, self.user_brands[users], True, axis=1)
        weight = self.item_popularity[None, :] * np.where(
            brand_hot[:, self.item_brand], self.brand_boost, 1.0
        )
        cell_total = np.add.reduceat(weight[:, self._cell_order], self._cell_start, axis=1)
        level_pref = LEVEL_PREFERENCE[self.user_price_level[users]]
        return (
            self.user_taste[users][:, self.item_category].astype(np.float64)
            * level_pref[:, self.item_price_level]
            * weight
            / cell_total[:, self._cell]
        )

    def true_top_items(self, user_id: str, k: int = 10, event_type: str = "purchase") -> list[str]:
        """The k items the user is most likely to act on next, best first."""
        probability = self.true_affinity([user_id], event_type)[0]
        top = np.argsort(-probability, kind="stable")[:k]
        return [str(i) for i in self.item_ids[top]]

    # -- sampling --------------------------------------------------------------------------
    def _sample_items(self, rng: np.random.Generator, users: np.ndarray) -> tuple[np.ndarray, ...]:
        """An item per row for these users, and whether it came from taste (not popularity)."""
        from_taste = rng.random(len(users)) < self.taste_share
        items = np.empty(len(users), dtype=np.int64)
        browse = ~from_taste
        items[browse] = _draw_cdf(rng, self._pop_cdf, int(browse.sum()))
        items[from_taste] = self._taste_draw(rng, users[from_taste])
        return items, from_taste

    def _taste_draw(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        categories = _draw_rows(rng, self.user_taste[users])
        levels = _draw_rows(rng, LEVEL_PREFERENCE[self.user_price_level[users]])
        cells = categories * len(PRICE_LEVELS) + levels
        chosen = np.empty(len(users), dtype=np.int64)
        pending = np.arange(len(users))
        # Rejection sampling: a popularity draw in the cell is kept for sure when of a
        # preferred brand, else with 1/boost, which makes brand preference exact.
        while pending.size:
            candidate = self._draw_in_cells(rng, cells[pending])
            preferred = (
                self.item_brand[candidate][:, None] == self.user_brands[users[pending]]
            ).any(axis=1)
            keep = preferred | (rng.random(pending.size) * self.brand_boost < 1.0)
            chosen[pending[keep]] = candidate[keep]
            pending = pending[~keep]
        return chosen

    def _draw_in_cells(self, rng: np.random.Generator, cells: np.ndarray) -> np.ndarray:
        target = self._cell_lo[cells] + rng.random(cells.size) * self._cell_mass[cells]
        position = np.searchsorted(self._cell_cum, target, side="right")
        position = np.clip(position, self._cell_start[cells], self._cell_end[cells] - 1)
        return self._cell_order[position]

    def _times_ms(self, fractions: np.ndarray) -> np.ndarray:
        """Map shares of the stream to instants so traffic follows the planted seasonality."""
        fractions = np.clip(fractions, 0.0, np.nextafter(1.0, 0.0))
        hour = np.searchsorted(self._hour_cdf, fractions, side="right")
        hour_start = np.concatenate([[0.0], self._hour_cdf])[hour]
        hour_share = self._hour_cdf[hour] - hour_start
        within = (fractions - hour_start) / np.where(hour_share > 0, hour_share, 1.0)
        return self._start_ms + ((hour + within) * 3_600_000).astype(np.int64)

    def _block(self, index: int, position: int, n_events: int) -> dict[str, np.ndarray]:
        """One block of whole sessions as column arrays, in time order."""
        rng = np.random.default_rng([self.seed, 1, index])
        # Small requests get small blocks; a session averages more than 4 events.
        n_sessions = int(np.clip(n_events // 4, 1_000, SESSIONS_PER_BLOCK))
        users = _draw_cdf(rng, self._activity_cdf, n_sessions)
        guest = rng.random(n_sessions) < self.guest_share
        n_views = rng.geometric(1.0 / self.views_per_session, n_sessions)
        session_of_view = np.repeat(np.arange(n_sessions), n_views)
        items, from_taste = self._sample_items(rng, users[session_of_view])
        cart_rate = np.where(from_taste, self.cart_rate_taste, self.cart_rate_browse)
        carted = rng.random(items.size) < cart_rate
        bought = carted & (rng.random(items.size) < self.purchase_rate)

        gaps = rng.exponential(60_000.0, items.size)
        view_offset = _within_session_cumsum(gaps, n_views)
        session_len = np.bincount(session_of_view, weights=gaps, minlength=n_sessions)
        checkout = session_len + rng.exponential(120_000.0, n_sessions)
        n_in_session = n_views + np.bincount(
            session_of_view, weights=carted.astype(float) + bought, minlength=n_sessions
        ).astype(np.int64)
        before = position + np.cumsum(n_in_session) - n_in_session
        fraction = (before + rng.random(n_sessions) * n_in_session) / max(n_events, 1)
        session_start = self._times_ms(fraction)

        quantity = rng.geometric(0.7, items.size).astype(np.float64)
        cart_rows, buy_rows = np.flatnonzero(carted), np.flatnonzero(bought)
        view_time = session_start[session_of_view] + view_offset.astype(np.int64)
        cart_time = view_time[cart_rows] + rng.exponential(20_000.0, cart_rows.size).astype(
            np.int64
        )
        buy_session = session_of_view[buy_rows]
        buy_time = session_start[buy_session] + checkout[buy_session].astype(np.int64)
        nan_views = np.full(items.size, np.nan)
        block = {
            "session": np.concatenate([session_of_view, session_of_view[cart_rows], buy_session]),
            "item": np.concatenate([items, items[cart_rows], items[buy_rows]]),
            "type": np.repeat(
                np.array([VIEW, CART, PURCHASE], dtype=np.int8),
                [items.size, cart_rows.size, buy_rows.size],
            ),
            "time": np.concatenate([view_time, cart_time, buy_time]),
            "quantity": np.concatenate([nan_views, quantity[cart_rows], quantity[buy_rows]]),
        }
        block["value"] = np.where(
            block["type"] == PURCHASE, self.item_price[block["item"]] * block["quantity"], np.nan
        )
        block["user"] = np.where(guest, -1, users)[block["session"]]
        block["session"] = block["session"] + index * n_sessions
        order = np.lexsort((block["type"], block["session"], block["time"]))
        return {name: column[order] for name, column in block.items()}

    def _event_arrays(self, n_events: int) -> Iterator[dict[str, np.ndarray]]:
        produced, index = 0, 0
        while produced < n_events:
            block = self._block(index, produced, n_events)
            produced += block["item"].size
            index += 1
            yield block

    def events(self, n_events: int, chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
        """Stream exactly `n_events` events as frames of `chunk_rows` rows (the last shorter).

        Columns: user_id (missing for guests), item_id, event_type (view, add_to_cart,
        purchase), timestamp (UTC), value (revenue of a purchase), quantity (carts and
        purchases), session_id, order_id (one per session that bought). Events are in time
        order within each block of up to 50,000 sessions and nearly so across blocks; the stream is
        cut after `n_events`, so the last session may be incomplete.
        """
        if n_events < 0 or chunk_rows < 1:
            raise ValueError("n_events must be >= 0 and chunk_rows >= 1")
        pending: list[dict[str, np.ndarray]] = []
        held, emitted = 0, 0
        blocks = self._event_arrays(n_events)
        while emitted < n_events:
            want = min(chunk_rows, n_events - emitted)
            while held < want:
                block = next(blocks)
                pending.append(block)
                held += block["item"].size
            merged = {k: np.concatenate([b[k] for b in pending]) for k in pending[0]}
            rest = {k: v[want:] for k, v in merged.items()}
            pending, held = [rest], held - want
            emitted += want
            yield self._frame({k: v[:want] for k, v in merged.items()})

    def _frame(self, arrays: dict[str, np.ndarray]) -> pd.DataFrame:
        user_ids = np.append(self.user_ids, None)  # index -1 (a guest) reads None
        session = pd.Series(arrays["session"]).astype(str)
        bought = arrays["type"] == PURCHASE
        return pd.DataFrame(
            {
                "user_id": user_ids[arrays["user"]],
                "item_id": self.item_ids[arrays["item"]],
                "event_type": np.array(EVENT_TYPES, dtype=object)[arrays["type"]],
                "timestamp": _utc_from_ms(arrays["time"]),
                "value": arrays["value"],
                "quantity": arrays["quantity"],
                "session_id": ("s" + session).to_numpy(dtype=object),
                "order_id": ("o" + session).where(bought, None).to_numpy(dtype=object),
            }
        )

    def shop_data(self, n_events: int) -> ShopData:
        """Everything in memory at once: for tests and small experiments."""
        events = pd.concat(list(self.events(n_events)), ignore_index=True)
        return ShopData(f"synthetic-{self.seed}", events, self.items(), self.users())

    def write_csv(self, path: Path | str, n_events: int, chunk_rows: int = 1_000_000) -> int:
        """Write events as CSV in nextbuy columns (timestamp = unix ms); returns rows written."""
        schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("item_id", pa.string()),
                ("event_type", pa.string()),
                ("timestamp", pa.int64()),
                ("value", pa.float64()),
                ("quantity", pa.float64()),
                ("session_id", pa.string()),
                ("order_id", pa.string()),
            ]
        )
        rows = 0
        options = pa_csv.WriteOptions(quoting_style="needed")
        with pa_csv.CSVWriter(str(path), schema, write_options=options) as writer:
            for frame in self.events(n_events, chunk_rows):
                frame["timestamp"] = frame["timestamp"].astype("int64") // 1_000_000
                writer.write_table(pa.Table.from_pandas(frame, schema, preserve_index=False))
                rows += len(frame)
        return rows


def _check_arguments(
    n_users: int, n_items: int, n_categories: int, n_brands: int, per_user: int, days: int
) -> None:
    if min(n_users, n_categories, n_brands, days) < 1:
        raise ValueError("n_users, n_categories, n_brands and days must be at least 1")
    if n_items < n_categories * len(PRICE_LEVELS):
        raise ValueError("n_items must be at least 3 × n_categories (one per price level)")
    if not 1 <= per_user <= n_brands:
        raise ValueError("brands_per_user must be between 1 and n_brands")


def _draw_cdf(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """n indices drawn from the distribution whose cumulative sums are `cdf`."""
    index = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(index, cdf.size - 1)


def _draw_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One index per row, drawn from that row's distribution."""
    cumulative = np.cumsum(probabilities, axis=1)
    target = rng.random(len(probabilities)) * cumulative[:, -1]
    index = (cumulative <= target[:, None]).sum(axis=1)
    return np.minimum(index, probabilities.shape[1] - 1)


def _distinct_draws(rng: np.random.Generator, rows: int, population: int, k: int) -> np.ndarray:
    """Per row, k distinct values of range(population), uniformly (Floyd's algorithm).

    Memory stays rows × k however large the population is.
    """
    chosen = np.empty((rows, k), dtype=np.int64)
    for column, top in enumerate(range(population - k, population)):
        draw = rng.integers(0, top + 1, rows)
        taken = (chosen[:, :column] == draw[:, None]).any(axis=1)
        chosen[:, column] = np.where(taken, top, draw)
    return chosen


def _within_session_cumsum(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Running sum of `values` restarting at each session (rows grouped by `lengths`)."""
    total = np.cumsum(values)
    start = np.cumsum(lengths) - lengths
    offset = np.concatenate([[0.0], total])[start]
    return total - np.repeat(offset, lengths) - values


def _utc_from_ms(ms: np.ndarray) -> pd.Series | pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True).astype(
        "datetime64[ns, UTC]"
    )
