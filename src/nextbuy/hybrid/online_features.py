"""The online ranker's features: `event_facts` (what the features read of a shopper's
events for a candidate set, event times kept as stamps) and `timed_features` (what moves
with the request's clock and context). Their values are `FeatureBuilder.build`'s for the
same user, events and request time (tests/test_hybrid_online.py compares them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nextbuy.hybrid.candidates import MISSING_RANK, CandidateSet
from nextbuy.hybrid.features import (
    DAY_NS,
    ITEM_FEATURES,
    USER_FEATURES,
    FeatureBuilder,
    RankingContext,
    _code,
)
from nextbuy.hybrid.online_events import Attributes, EventFacts, NewItems, UserEvents


class OnlineFeatures:
    """The ranker's features for one shopper's candidates, from arrays built once at load:
    the item features as of the cutoff and group codes of categories and brands."""

    def __init__(self, builder: FeatureBuilder, feature_order: list[str], n_items: int) -> None:
        self.feature_order = feature_order
        self.n_items = n_items
        self.item_table = builder.item_table[list(ITEM_FEATURES)].to_numpy(np.float64)
        self.price = np.asarray(builder.price, np.float64)
        self.category_code = group_codes(builder.category)
        self.brand_code = group_codes(builder.brand)
        self.category_of = code_of(builder.category, self.category_code)
        self.brand_of = code_of(builder.brand, self.brand_code)
        users = builder.item_table["item_users"].to_numpy(np.float64)
        self.category_users = pd.Series(users).groupby(builder.category).sum().to_dict()

    def event_facts(
        self, candidates: CandidateSet, events: UserEvents, new: NewItems | None = None
    ) -> EventFacts:
        """What the features read of the shopper's events for these candidates, times kept
        as stamps: the costly half of the features, computed once per candidate set.
        With `timed_features`, `FeatureBuilder.build`'s values for the same candidates,
        events and request time; candidate items past the stage's (n_items + j) are `new`'s
        j-th item."""
        items = candidates.items
        n = len(items)
        category, brand = self._group_codes_of(items, new)
        user, first, last = self._user_facts(events)
        known = events.item >= 0
        k_item, k_stamp, k_basket = events.item[known], events.stamp[known], events.basket[known]
        touched = np.zeros(0, np.int64)
        baskets = newest = oldest = np.zeros(0, np.int64)
        if len(k_item) and n:
            # per candidate: its distinct baskets, and the newest and oldest of its events
            back = np.argsort(items, kind="stable")
            sorted_items = items[back]
            pos = np.minimum(np.searchsorted(sorted_items, k_item), n - 1)
            hit = sorted_items[pos] == k_item
            at, h_stamp, h_basket = back[pos[hit]], k_stamp[hit], k_basket[hit]
            if len(at):
                pairs = np.unique(np.stack([at, h_basket]), axis=1)
                count = np.bincount(pairs[0], minlength=n)
                newest_of = np.full(n, np.iinfo(np.int64).min)
                oldest_of = np.full(n, np.iinfo(np.int64).max)
                np.maximum.at(newest_of, at, h_stamp)
                np.minimum.at(oldest_of, at, h_stamp)
                touched = np.flatnonzero(count > 0)
                baskets, newest, oldest = count[touched], newest_of[touched], oldest_of[touched]
        in_c, share_c, stamp_c = self._group(self.category_code, k_item, k_stamp, category)
        in_b, share_b, _ = self._group(self.brand_code, k_item, k_stamp, brand)
        return EventFacts(
            user,
            first,
            last,
            touched,
            baskets,
            newest,
            oldest,
            in_c,
            share_c,
            stamp_c,
            in_b,
            share_b,
        )

    def timed_features(
        self,
        candidates: CandidateSet,
        facts: EventFacts,
        now_ns: int,
        context: RankingContext | None = None,
        new: NewItems | None = None,
    ) -> np.ndarray:
        """(n, n_features) float64 in the ranker's column order: `event_facts` at the
        request's time and context. Event times become ages here, so facts computed ahead
        give the request's very values."""
        items = candidates.items
        n = len(items)
        attrs = self._attributes(items, new)
        columns: dict[str, np.ndarray] = {}
        for g, name in enumerate(candidates.generators):
            columns[f"{name}_score"] = candidates.scores[:, g]
            columns[f"{name}_rank"] = candidates.ranks[:, g]
        columns["n_sources"] = (candidates.ranks < MISSING_RANK).sum(axis=1).astype(np.float32)
        for j, name in enumerate(ITEM_FEATURES):
            columns[name] = attrs.table[:, j]
        user = dict(facts.user)
        if facts.last is not None and facts.first is not None:
            # the least and the most days ago: ages fall as stamps rise, so (exactly) the
            # ages of the newest and the oldest event
            user["user_days_since_last"] = float(_ages(now_ns, np.array([facts.last]))[0])
            user["user_tenure_days"] = float(_ages(now_ns, np.array([facts.first]))[0])
        for name in USER_FEATURES:
            columns[name] = np.full(n, user[name])
        baskets = np.zeros(n)
        since = np.full(n, np.nan)
        gap = np.full(n, np.nan)
        if len(facts.touched):
            young, old = _ages(now_ns, facts.newest), _ages(now_ns, facts.oldest)
            baskets[facts.touched] = facts.baskets
            since[facts.touched] = young
            again = facts.baskets > 1
            gap[facts.touched[again]] = (old[again] - young[again]) / (facts.baskets[again] - 1)
        median = user["user_median_price"]
        with np.errstate(divide="ignore", invalid="ignore"):
            columns["ui_due"] = since / gap
            columns["price_vs_user"] = attrs.price / (median if median > 0 else np.nan)
        columns["ui_baskets"] = baskets
        columns["ui_days_since"] = since
        columns["ui_mean_gap_days"] = gap
        columns["category_share"] = _shares(facts.in_category, facts.category_share, attrs.category)
        columns["brand_share"] = _shares(facts.in_brand, facts.brand_share, attrs.brand)
        category_since = np.full(n, np.nan)
        category_since[facts.in_category] = _ages(now_ns, facts.category_newest)
        columns["category_days_since"] = category_since
        moment = pd.Timestamp(now_ns, tz="UTC")
        columns["hour"] = np.full(n, float(moment.hour))
        columns["weekday"] = np.full(n, float(moment.day_of_week))
        context = context or RankingContext()
        columns["device"] = np.full(n, _code(context.device))
        columns["placement"] = np.full(n, _code(context.placement))
        # column by column: written contiguously (LightGBM takes a C-ordered copy)
        out = np.empty((n, len(self.feature_order)), np.float64, order="F")
        for j, name in enumerate(self.feature_order):
            out[:, j] = columns[name]
        return out

    def _user_facts(self, ev: UserEvents) -> tuple[dict[str, float], int | None, int | None]:
        """`USER_FEATURES` but the two ages (NaN here), and the oldest and newest stamps."""
        nan = float("nan")
        out = dict.fromkeys(USER_FEATURES, nan)
        out["user_baskets"] = out["user_events"] = 0.0
        known = ev.item >= 0
        out["user_items"] = float(len(np.unique(ev.item[known])))
        if not len(ev):
            return out, None, None
        out["user_events"] = float(len(ev))
        out["user_baskets"] = float(len(np.unique(ev.basket)))
        out["user_basket_size"] = out["user_events"] / out["user_baskets"]
        bought = known & ev.purchase if (known & ev.purchase).any() else known
        price = self.price[ev.item[bought]]
        paid = price * ev.quantity[bought]
        ok = ~(np.isnan(price) | np.isnan(paid))
        if ok.any():
            out["user_spend"] = float(np.sum(paid[ok]))
            out["user_median_price"] = float(np.median(price[ok]))
        return out, int(ev.stamp.min()), int(ev.stamp.max())

    def _attributes(self, items: np.ndarray, new: NewItems | None) -> Attributes:
        """Item features, price, category and brand codes per candidate."""
        category, brand = self._group_codes_of(items, new)
        inside = items < self.n_items
        if inside.all():
            return Attributes(self.item_table[items], self.price[items], category, brand)
        assert new is not None
        at = items[~inside] - self.n_items
        safe = np.where(inside, items, 0)
        table = self.item_table[safe]
        table[~inside] = self._new_item_table(new)[at]
        price = np.where(inside, self.price[safe], 0.0)
        price[~inside] = new.price[at]
        return Attributes(table, price, category, brand)

    def _group_codes_of(
        self, items: np.ndarray, new: NewItems | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Category and brand codes per candidate (-1 none)."""
        inside = items < self.n_items
        if inside.all():
            return self.category_code[items], self.brand_code[items]
        assert new is not None
        at = items[~inside] - self.n_items
        safe = np.where(inside, items, 0)
        category = self.category_code[safe]
        category[~inside] = [self.category_of.get(c, -1) for c in new.category[at]]
        brand = self.brand_code[safe]
        brand[~inside] = [self.brand_of.get(b, -1) for b in new.brand[at]]
        return category, brand

    def _new_item_table(self, new: NewItems) -> np.ndarray:
        """`ITEM_FEATURES` of items nobody has bought yet, as the builder gives a catalogue
        item without sales: no buyers, no dates, the catalogue's price."""
        n = len(new.price)
        values = {
            "item_users": np.zeros(n),
            "item_users_30d": np.zeros(n),
            "item_users_7d": np.zeros(n),
            "item_trend": np.ones(n),
            "item_age_days": np.full(n, np.nan),
            "item_days_since_sold": np.full(n, np.nan),
            "item_repeat_rate": np.full(n, np.nan),
            "price": new.price,
            "log_price": np.log1p(new.price),
            "price_level": np.full(n, 0.5),
            "category_users": np.asarray(
                [self.category_users.get(c, 0.0) if c else np.nan for c in new.category]
            ),
        }
        return np.column_stack([values[name] for name in ITEM_FEATURES]).astype(np.float64)

    @staticmethod
    def _group(
        codes: np.ndarray, k_item: np.ndarray, k_stamp: np.ndarray, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates (`cand`: their group codes) whose group the user has known events
        in, the share of those events in it, and the stamp of the newest of them."""
        none = np.zeros(0, np.int64)
        if not (len(k_item) and len(cand)):
            return none, np.zeros(0), none
        ev_group = codes[k_item]
        mine = ev_group >= 0
        groups, mine_stamp = ev_group[mine], k_stamp[mine]
        if not len(groups):
            return none, np.zeros(0), none
        width = int(max(groups.max(), cand.max(initial=-1))) + 1
        count = np.bincount(groups, minlength=width)
        newest = np.full(width, np.iinfo(np.int64).min)
        np.maximum.at(newest, groups, mine_stamp)
        hits = np.flatnonzero(cand >= 0)
        hits = hits[count[cand[hits]] > 0]
        return hits, count[cand[hits]] / len(k_item), newest[cand[hits]]


def code_of(values: np.ndarray, codes: np.ndarray) -> dict[str, int]:
    return {str(v): int(c) for v, c in zip(values, codes, strict=True) if c >= 0}


def group_codes(values: np.ndarray) -> np.ndarray:
    codes, _ = pd.factorize(np.where(values == "", None, values))
    return codes.astype(np.int64)


def _shares(rows: np.ndarray, shares: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per candidate, the user's share of events in its group: 0 none, NaN no group."""
    out = np.zeros(len(codes))
    out[rows] = shares
    out[codes < 0] = np.nan
    return out


def _ages(now_ns: int, stamps: np.ndarray) -> np.ndarray:
    """Days from each stamp to `now_ns`, as `FeatureBuilder` counts them."""
    return (now_ns - stamps).astype(np.float64) / DAY_NS
