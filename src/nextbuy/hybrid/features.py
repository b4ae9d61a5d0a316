"""Ranker features for (user, item) candidates, computed only from events before a cutoff.

The cutoff is the request time: in training it is the start of the label window, at
evaluation the start of the test period, in serving "now". `FeatureBuilder` drops every event
at or after it the moment it is built (or refuses them, with `strict=True`), so no feature
can see the future; `extra_events` given at request time are held to the same rule.

Feature groups (names in `FEATURE_GROUPS`):

- generator: each generator's score and rank, and how many generators proposed the item;
- item: buyers all-time, last 30 and 7 days, trend, age, days since last sold, repeat rate,
  price, log price, price level within the category, the category's popularity;
- user (recency–frequency–monetary): days since last event, baskets, distinct items, events,
  tenure, spend, median price paid, mean basket size;
- user × item: baskets with the item, days since, mean gap between them and how "due" a
  repurchase is; price relative to the user's usual spend; share of the user's items in the
  item's category and brand; days since the user last touched the category;
- context: hour, weekday, device and placement of the request.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nextbuy.data.content import ContentFeatures
from nextbuy.errors import DataError
from nextbuy.hybrid.candidates import MISSING_RANK, CandidateSet
from nextbuy.models.requests import RankingContext

DAY_NS = 86_400 * 10**9
PURCHASE = "purchase"

ITEM_FEATURES: tuple[str, ...] = (
    "item_users",
    "item_users_30d",
    "item_users_7d",
    "item_trend",
    "item_age_days",
    "item_days_since_sold",
    "item_repeat_rate",
    "price",
    "log_price",
    "price_level",
    "category_users",
)
USER_FEATURES: tuple[str, ...] = (
    "user_days_since_last",
    "user_baskets",
    "user_items",
    "user_events",
    "user_tenure_days",
    "user_spend",
    "user_median_price",
    "user_basket_size",
)
PAIR_FEATURES: tuple[str, ...] = (
    "ui_baskets",
    "ui_days_since",
    "ui_mean_gap_days",
    "ui_due",
    "price_vs_user",
    "category_share",
    "brand_share",
    "category_days_since",
)
CONTEXT_FEATURES: tuple[str, ...] = ("hour", "weekday", "device", "placement")
CONTEXT_KEYS: tuple[str, ...] = ("device", "placement")  # read from events' context


RequestTime = pd.Timestamp | str | Sequence[pd.Timestamp] | None


class LeakageError(DataError):
    """Events at or after the cutoff were offered to a feature computed as of the cutoff."""


def prepare_events(events: pd.DataFrame, weights: Mapping[str, float]) -> pd.DataFrame:
    """The columns features and matrices need: ids as str, UTC times, weight, quantity, basket.

    The basket is the order id, else the session id, else the user's timestamp (Online
    Retail's invoice lines share one). Rows are sorted by time.
    """
    missing = [c for c in ("user_id", "item_id", "event_type", "timestamp") if c not in events]
    if missing:
        raise DataError(f"interactions lack column(s) {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "user_id": events["user_id"].astype(object).where(events["user_id"].notna(), None),
            "item_id": events["item_id"].astype(str),
            "event_type": events["event_type"].astype(str),
            "timestamp": pd.to_datetime(events["timestamp"], utc=True),
        }
    )
    if out["timestamp"].isna().any():
        raise DataError(f"{int(out['timestamp'].isna().sum())} interactions have no timestamp")
    out["user_id"] = out["user_id"].map(lambda u: None if u is None else str(u))
    out["weight"] = out["event_type"].map(dict(weights)).fillna(0.0).astype(np.float32)
    quantity = events["quantity"] if "quantity" in events else pd.Series(1.0, index=events.index)
    out["quantity"] = pd.to_numeric(quantity, errors="coerce").fillna(1.0).abs().to_numpy()
    out["basket"] = _baskets(events, out)
    if "context" in events and events["context"].notna().any():
        for key, values in _context_values(events["context"]).items():
            out[key] = values
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _context_values(context: pd.Series) -> dict[str, np.ndarray]:
    """The device and placement named in each event's context (JSON text or a dict), None
    where absent; parsed once per distinct context, as a shop sends few of them."""
    distinct = pd.unique(context.dropna().astype(str))
    parsed = {text: _context_dict(text) for text in distinct}
    if not any(parsed.values()):
        return {}  # contexts without a device or placement: nothing for the ranker
    keys = context.astype(object).where(context.notna(), None)
    out = {}
    for key in CONTEXT_KEYS:
        lookup = {text: found.get(key) for text, found in parsed.items()}
        out[key] = keys.map(lambda t, lookup=lookup: lookup.get(str(t)) if t else None)
        out[key] = out[key].to_numpy(dtype=object)
    return out


def _context_dict(text: str) -> dict[str, str]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: str(v) for k, v in found.items() if k in CONTEXT_KEYS and v not in (None, "")}


def label_contexts(later: pd.DataFrame, user_ids: Sequence[str]) -> list[RankingContext] | None:
    """Per user, the context of their first positive event in `later`: where they were when
    they acted on what a list would have shown (None when events carry no context)."""
    if not all(key in later for key in CONTEXT_KEYS):
        return None
    acted = later.loc[later["weight"] > 0].drop_duplicates("user_id")
    first = acted.set_index("user_id")[list(CONTEXT_KEYS)]
    found = first.reindex(pd.Index(np.asarray(user_ids, dtype=object)))
    found = found.astype(object).where(found.notna(), None)
    return [RankingContext(d, p) for d, p in found.itertuples(index=False)]


def _baskets(events: pd.DataFrame, out: pd.DataFrame) -> np.ndarray:
    stamp = (
        out["user_id"].fillna("").astype(str) + "@" + out["timestamp"].astype("int64").astype(str)
    )
    basket = stamp.to_numpy(dtype=object)
    for column, prefix in (("session_id", "s:"), ("order_id", "o:")):
        if column in events:
            values = events[column].to_numpy(dtype=object)
            given = pd.notna(values) & (values != "")
            basket[given] = prefix + values[given].astype(str).astype(object)
    return basket


def before(events: pd.DataFrame, cutoff: pd.Timestamp, *, strict: bool = False) -> pd.DataFrame:
    """Events strictly before `cutoff`; with `strict`, any later event is an error."""
    cutoff = _utc(cutoff)
    late = events["timestamp"] >= cutoff
    if strict and late.any():
        first = events.loc[late, "timestamp"].min()
        raise LeakageError(
            f"{int(late.sum())} events at or after the cutoff {cutoff.isoformat()} "
            f"(first at {first.isoformat()}) were offered to features computed as of the cutoff"
        )
    return events.loc[~late]


def _utc(moment: pd.Timestamp | str) -> pd.Timestamp:
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


def _code(value: str | None) -> float:
    """A stable small number for a categorical context value (NaN when not given)."""
    return np.nan if not value else float(zlib.crc32(value.encode("utf-8")) % 1000)


class FeatureBuilder:
    """Features as of `cutoff` over a fixed item index (the stage matrix's columns)."""

    def __init__(
        self,
        events: pd.DataFrame,
        item_ids: Sequence[str],
        content: ContentFeatures | None,
        cutoff: pd.Timestamp,
        *,
        strict: bool = False,
    ) -> None:
        self.cutoff = _utc(cutoff)
        self.events = before(events, self.cutoff, strict=strict)
        self.events = self.events.loc[self.events["weight"] > 0]
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.item_index = pd.Index(self.item_ids)
        self._item_content(content)
        self.item_table = self._item_features()

    # -- items -------------------------------------------------------------------------------
    def _item_content(self, content: ContentFeatures | None) -> None:
        n = len(self.item_ids)
        self.price = np.full(n, np.nan)
        self.price_level = np.full(n, 0.5, np.float32)
        self.category = np.full(n, "", dtype=object)
        self.brand = np.full(n, "", dtype=object)
        if content is None:
            return
        pos = content.positions(list(self.item_ids))
        ok = pos >= 0
        self.price[ok] = content.price[pos[ok]]
        self.price_level[ok] = content.price_level[pos[ok]]
        self.category[ok] = content.category[pos[ok]]
        self.brand[ok] = content.brand[pos[ok]]

    def _item_codes(self, item_ids: pd.Series) -> np.ndarray:
        return self.item_index.get_indexer(item_ids)

    def _item_features(self) -> pd.DataFrame:
        ev = self.events.loc[self.events["user_id"].notna()]
        n = len(self.item_ids)
        code = self._item_codes(ev["item_id"])
        known = code >= 0
        ev, code = ev.loc[known], code[known]
        age_ns = (self.cutoff - ev["timestamp"]).dt.total_seconds().to_numpy() * 1e9
        pairs = pd.DataFrame({"item": code, "user": ev["user_id"].to_numpy(), "age": age_ns})
        users = _distinct_users(pairs, n)
        users_30 = _distinct_users(pairs.loc[pairs["age"] < 30 * DAY_NS], n)
        users_7 = _distinct_users(pairs.loc[pairs["age"] < 7 * DAY_NS], n)
        first = np.full(n, np.nan)
        last = np.full(n, np.nan)
        grouped = pairs.groupby("item")["age"]
        first[grouped.max().index] = grouped.max().to_numpy() / DAY_NS
        last[grouped.min().index] = grouped.min().to_numpy() / DAY_NS
        repeat = self._repeat_rate(ev, code, n)
        category_users = self._category_users(users)
        return pd.DataFrame(
            {
                "item_users": users,
                "item_users_30d": users_30,
                "item_users_7d": users_7,
                # 7 days' buyers against a quarter of 30 days': above 1 means rising
                "item_trend": (users_7 + 1.0) / (users_30 * 7.0 / 30.0 + 1.0),
                "item_age_days": first,
                "item_days_since_sold": last,
                "item_repeat_rate": repeat,
                "price": self.price,
                "log_price": np.log1p(self.price),
                "price_level": self.price_level,
                "category_users": category_users,
            }
        )

    def _repeat_rate(self, ev: pd.DataFrame, code: np.ndarray, n: int) -> np.ndarray:
        """Share of an item's buyers who bought it in more than one basket."""
        frame = pd.DataFrame({"item": code, "user": ev["user_id"].to_numpy(), "b": ev["basket"]})
        per_user = frame.drop_duplicates().groupby(["item", "user"]).size()
        rate = (per_user > 1).groupby(level="item").mean()
        out = np.full(n, np.nan)
        out[rate.index.to_numpy()] = rate.to_numpy()
        return out

    def _category_users(self, users: np.ndarray) -> np.ndarray:
        totals = pd.Series(users).groupby(self.category).transform("sum").to_numpy()
        return np.where(self.category != "", totals, np.nan)

    # -- users ---------------------------------------------------------------------------------
    def request_times(self, user_ids: Sequence[str], now: RequestTime = None) -> np.ndarray:
        """Each user's request time as UTC datetime64[ns]; never before the cutoff."""
        n = len(user_ids)
        if now is None:
            when = np.full(n, self.cutoff.to_datetime64())
        elif isinstance(now, str | pd.Timestamp):
            when = np.full(n, _utc(now).to_datetime64())
        else:
            stamps = pd.to_datetime(pd.Series(list(now)), utc=True)
            if len(stamps) != n:
                raise DataError(f"{len(stamps)} request times for {n} users")
            when = stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        when = when.astype("datetime64[ns]")
        early = when < self.cutoff.tz_localize(None).to_datetime64()
        if early.any():
            raise LeakageError(
                f"request time {pd.Timestamp(when[early][0])} is before the features' cutoff "
                f"{self.cutoff}: features as of the cutoff would see its future"
            )
        return when

    def user_events(
        self,
        user_ids: Sequence[str],
        extra_events: pd.DataFrame | None = None,
        now: RequestTime = None,
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """The events of these users before each one's request time, and those times.

        `now` is one time for everyone or one per user (a live request each).
        """
        when = self.request_times(user_ids, now)
        wanted = pd.Index(np.asarray(user_ids, dtype=object))
        mine = self.events.loc[self.events["user_id"].isin(wanted)]
        if extra_events is not None and len(extra_events):
            extra = extra_events.loc[(extra_events["weight"] > 0)]
            row = wanted.get_indexer(extra["user_id"])
            extra, row = extra.loc[row >= 0], row[row >= 0]
            stamp = extra["timestamp"].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
            # an event at or after its user's request time has not happened yet
            mine = pd.concat([mine, extra.loc[stamp < when[row]]], ignore_index=True)
        return mine, when

    def build(
        self,
        candidates: CandidateSet,
        user_ids: Sequence[str],
        *,
        extra_events: pd.DataFrame | None = None,
        now: RequestTime = None,
        context: RankingContext | Sequence[RankingContext] | None = None,
    ) -> pd.DataFrame:
        """One row of features per candidate, columns in `feature_names(generators)` order;
        `context` is the request's, or one per user (training examples)."""
        user_ids = np.asarray(user_ids, dtype=object)
        mine, when = self.user_events(user_ids, extra_events, now)
        frame = _generator_features(candidates)
        items = candidates.items
        item_part = self.item_table.iloc[items].reset_index(drop=True)
        frame = pd.concat([frame, item_part], axis=1)
        stats = _UserStats(mine, user_ids, self, when)
        rows = candidates.rows
        for name in USER_FEATURES:
            frame[name] = stats.user[name][rows]
        frame = frame.assign(**stats.pair_features(rows, items))
        moments = pd.DatetimeIndex(when[rows])
        frame["hour"] = moments.hour.to_numpy(np.float64)
        frame["weekday"] = moments.day_of_week.to_numpy(np.float64)
        if context is None or isinstance(context, RankingContext):
            context = context or RankingContext()
            frame["device"] = _code(context.device)
            frame["placement"] = _code(context.placement)
        else:
            frame["device"] = np.array([_code(c.device) for c in context])[rows]
            frame["placement"] = np.array([_code(c.placement) for c in context])[rows]
        return frame

    def labels(
        self, candidates: CandidateSet, user_ids: Sequence[str], later: pd.DataFrame
    ) -> np.ndarray:
        """1 where the user acted on the candidate in `later` (events at or after the cutoff)."""
        positive = later.loc[(later["weight"] > 0) & (later["timestamp"] >= self.cutoff)]
        rows = pd.Index(np.asarray(user_ids, dtype=object)).get_indexer(positive["user_id"])
        cols = self._item_codes(positive["item_id"])
        ok = (rows >= 0) & (cols >= 0)
        n_items = len(self.item_ids)
        truth = np.unique(rows[ok].astype(np.int64) * n_items + cols[ok])
        keys = candidates.rows * n_items + candidates.items
        return np.isin(keys, truth).astype(np.int32)


def _distinct_users(pairs: pd.DataFrame, n: int) -> np.ndarray:
    counts = pairs.drop_duplicates(["item", "user"]).groupby("item").size()
    out = np.zeros(n, np.float64)
    out[counts.index.to_numpy()] = counts.to_numpy()
    return out


def _generator_features(candidates: CandidateSet) -> pd.DataFrame:
    data: dict[str, np.ndarray] = {}
    for g, name in enumerate(candidates.generators):
        data[f"{name}_score"] = candidates.scores[:, g]
        data[f"{name}_rank"] = candidates.ranks[:, g]
    data["n_sources"] = (candidates.ranks < MISSING_RANK).sum(axis=1).astype(np.float32)
    return pd.DataFrame(data)


def feature_names(generators: Sequence[str]) -> list[str]:
    """Every feature column `FeatureBuilder.build` gives, in order."""
    gen = [f"{g}_{kind}" for g in generators for kind in ("score", "rank")]
    return [*gen, "n_sources", *ITEM_FEATURES, *USER_FEATURES, *PAIR_FEATURES, *CONTEXT_FEATURES]


FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "item": ITEM_FEATURES,
    "user": USER_FEATURES,
    "pair": PAIR_FEATURES,
    "context": CONTEXT_FEATURES,
}


class _UserStats:
    """Per-user and per-(user, item/category/brand) aggregates of the users' own events."""

    def __init__(
        self, events: pd.DataFrame, user_ids: np.ndarray, owner: FeatureBuilder, when: np.ndarray
    ) -> None:
        self.n_users = len(user_ids)
        self.n_items = len(owner.item_ids)
        self.owner = owner
        row = pd.Index(user_ids).get_indexer(events["user_id"])
        col = owner._item_codes(events["item_id"])
        stamp = events["timestamp"].dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
        at = np.maximum(row, 0)
        age = (when[at] - stamp).astype("timedelta64[ns]").astype(np.float64) / DAY_NS
        self.ev = pd.DataFrame(
            {
                "row": row,
                "item": col,
                "age": age,
                "basket": events["basket"].to_numpy(),
                "quantity": events["quantity"].to_numpy(),
                "purchase": (events["event_type"] == PURCHASE).to_numpy(),
            }
        ).loc[row >= 0]
        self.user = self._user_table()

    def _user_table(self) -> dict[str, np.ndarray]:
        ev, n = self.ev, self.n_users
        by_row = ev.groupby("row")
        out = {name: np.full(n, np.nan) for name in USER_FEATURES}
        idx = by_row.size().index.to_numpy()
        out["user_days_since_last"][idx] = by_row["age"].min().to_numpy()
        out["user_tenure_days"][idx] = by_row["age"].max().to_numpy()
        out["user_events"][idx] = by_row.size().to_numpy()
        out["user_baskets"][idx] = by_row["basket"].nunique().to_numpy()
        known = ev.loc[ev["item"] >= 0]
        out["user_items"][:] = 0.0
        items = known.groupby("row")["item"].nunique()
        out["user_items"][items.index.to_numpy()] = items.to_numpy()
        out["user_basket_size"][idx] = out["user_events"][idx] / out["user_baskets"][idx]
        self._spend(known, out)
        for name in ("user_baskets", "user_events"):
            out[name] = np.nan_to_num(out[name], nan=0.0)
        return out

    def _spend(self, known: pd.DataFrame, out: dict[str, np.ndarray]) -> None:
        # spend counts purchases where the data says which events are purchases
        bought = known.loc[known["purchase"]] if known["purchase"].any() else known
        price = self.owner.price[bought["item"].to_numpy()]
        frame = pd.DataFrame(
            {"row": bought["row"].to_numpy(), "price": price, "paid": price * bought["quantity"]}
        ).dropna()
        grouped = frame.groupby("row")
        out["user_spend"][grouped.size().index.to_numpy()] = grouped["paid"].sum().to_numpy()
        out["user_median_price"][grouped.size().index.to_numpy()] = grouped["price"].median()

    def pair_features(self, rows: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        known = self.ev.loc[self.ev["item"] >= 0]
        out: dict[str, np.ndarray] = {}
        out.update(self._item_pairs(known, rows, items))
        median = self.user["user_median_price"][rows]
        out["price_vs_user"] = self.owner.price[items] / np.where(median > 0, median, np.nan)
        category = self.owner.category
        out["category_share"], out["category_days_since"] = self._group_pairs(
            known, category, rows, items
        )
        out["brand_share"], _ = self._group_pairs(known, self.owner.brand, rows, items)
        return out

    def _item_pairs(
        self, known: pd.DataFrame, rows: np.ndarray, items: np.ndarray
    ) -> dict[str, np.ndarray]:
        per = known.groupby(["row", "item"]).agg(
            baskets=("basket", "nunique"), last=("age", "min"), first=("age", "max")
        )
        keys = (
            per.index.get_level_values(0).to_numpy() * self.n_items
            + per.index.get_level_values(1).to_numpy()
        )
        found, at = _lookup(keys, rows * self.n_items + items)
        baskets = np.zeros(len(rows))
        since = np.full(len(rows), np.nan)
        gap = np.full(len(rows), np.nan)
        baskets[found] = per["baskets"].to_numpy()[at[found]]
        since[found] = per["last"].to_numpy()[at[found]]
        span = (per["first"] - per["last"]).to_numpy()[at[found]]
        many = baskets[found] > 1
        gap_found = np.full(found.sum(), np.nan)
        gap_found[many] = span[many] / (baskets[found][many] - 1)
        gap[found] = gap_found
        with np.errstate(divide="ignore", invalid="ignore"):
            due = since / gap
        return {
            "ui_baskets": baskets,
            "ui_days_since": since,
            "ui_mean_gap_days": gap,
            "ui_due": due,
        }

    def _group_pairs(
        self, known: pd.DataFrame, group_of_item: np.ndarray, rows: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Share of the user's events in the candidate's group, and days since the last one."""
        codes, _ = pd.factorize(np.where(group_of_item == "", None, group_of_item))
        codes = codes.astype(np.int64)
        ev_group = codes[known["item"].to_numpy()]
        frame = pd.DataFrame({"row": known["row"].to_numpy(), "g": ev_group, "age": known["age"]})
        frame = frame.loc[frame["g"] >= 0]
        totals = np.bincount(known["row"].to_numpy(), minlength=self.n_users).astype(np.float64)
        per = frame.groupby(["row", "g"])["age"].agg(["size", "min"])
        n_groups = max(int(codes.max()) + 1, 1)
        keys = per.index.get_level_values(0).to_numpy() * n_groups + per.index.get_level_values(1)
        cand_group = codes[items]
        found, at = _lookup(np.asarray(keys), rows * n_groups + np.maximum(cand_group, 0))
        found &= cand_group >= 0
        share = np.zeros(len(rows))
        since = np.full(len(rows), np.nan)
        share[found] = per["size"].to_numpy()[at[found]] / np.maximum(totals[rows[found]], 1)
        since[found] = per["min"].to_numpy()[at[found]]
        share[cand_group < 0] = np.nan
        return share, since


def _lookup(sorted_keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each query key sits in `sorted_keys` (a groupby index, hence sorted)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(query), bool), np.zeros(len(query), np.int64)
    at = np.searchsorted(sorted_keys, query)
    at = np.minimum(at, len(sorted_keys) - 1)
    return sorted_keys[at] == query, at
