"""The hybrid pipeline for one request: the same candidates, features and ranker, in numpy.

`HybridRecommender.score` builds features with pandas group-bys over every event of the users
asked for: right for thousands of users at once, tens of milliseconds for one. A request
serves one shopper, so `OnlineRanker` precomputes at load what does not change between
requests — the item features as of the cutoff, each user's events as sorted arrays, group
codes of categories and brands — and computes the rest for one user with small numpy
reductions over that user's events plus whatever they did since the cutoff. The features
come in two halves: what they read of the shopper's events, event times kept as stamps
(`event_facts`, kept with candidates generated ahead of the request), and what moves with the
request's clock and context (`timed_features`: ages, hour, device, placement).

The values are those of `FeatureBuilder.build` for the same user, events and request time
(tests/test_hybrid_online.py compares them row by row); candidates come from the very
generators the offline pipeline runs (`candidates.generate`), so a shopper's list online is
the list the offline pipeline would give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.hybrid.candidate_cache import CandidateCache, GenerationKey
from nextbuy.hybrid.candidates import (
    MISSING_RANK,
    CandidateRequest,
    CandidateSet,
    Generator,
    keep_new,
    merge,
)
from nextbuy.hybrid.features import (
    CONTEXT_KEYS,
    DAY_NS,
    ITEM_FEATURES,
    PURCHASE,
    USER_FEATURES,
    RankingContext,
    _code,
)
from nextbuy.hybrid.pipeline import EXPOSURE_SCALE, HybridRecommender
from nextbuy.models.base import TopK
from nextbuy.models.content_model import ContentModel


@dataclass(frozen=True)
class FreshEvent:
    """Something a shopper did since the cutoff, as a request sees it."""

    item_id: str
    event_type: str
    ts_ns: int  # UTC nanoseconds


@dataclass(frozen=True)
class NewItems:
    """Catalogue items added since training, as candidates: content rows (in the content
    generator's space) and what the item features need."""

    vectors: sp.csr_matrix
    price: np.ndarray  # float64, NaN unknown
    category: np.ndarray  # object: category path, "" none
    brand: np.ndarray  # object: brand, "" none

    def __len__(self) -> int:
        return len(self.price)

    def take(self, rows: np.ndarray) -> NewItems:
        return NewItems(self.vectors[rows], self.price[rows], self.category[rows], self.brand[rows])


@dataclass
class _Attributes:
    table: np.ndarray  # (n, ITEM_FEATURES)
    price: np.ndarray
    category: np.ndarray  # group codes, -1 none
    brand: np.ndarray


@dataclass
class OnlineScored:
    """One request's candidates (stage item indices), ranker scores and ordering scores."""

    candidates: CandidateSet
    features: np.ndarray  # (n, n_features) in the ranker's column order
    raw: np.ndarray
    order: np.ndarray  # what the list is sorted by (exposure penalty, cold-start fallback)
    request: CandidateRequest
    generated_before: bool = False  # candidates came from `OnlineRanker.prepare`


@dataclass(frozen=True)
class EventFacts:
    """What the features read of one shopper's events for one candidate set, event times
    kept as stamps (the request's clock turns them into ages)."""

    user: dict[str, float]  # USER_FEATURES, the two ages NaN
    first: int | None  # stamp of the oldest event (None: no events)
    last: int | None  # stamp of the newest event
    touched: np.ndarray  # candidate rows the shopper has events of
    baskets: np.ndarray  # their distinct baskets
    newest: np.ndarray  # stamp of their newest and oldest event
    oldest: np.ndarray
    in_category: np.ndarray  # candidate rows whose category the shopper has events in
    category_share: np.ndarray  # the share of their events in it
    category_newest: np.ndarray  # stamp of the newest such event
    in_brand: np.ndarray  # the same for brands
    brand_share: np.ndarray


class Generated(NamedTuple):
    """What is kept of a shopper between their event and their request."""

    requests: dict[object, CandidateRequest]  # the history rows, per matrix
    candidates: CandidateSet
    facts: EventFacts


class _UserEvents:
    """One user's events (before the request time) as arrays."""

    def __init__(
        self,
        item: np.ndarray,
        stamp: np.ndarray,
        basket: np.ndarray,
        quantity: np.ndarray,
        purchase: np.ndarray,
        weight: np.ndarray,
        fresh: np.ndarray,
        key: np.ndarray,
    ) -> None:
        self.item = item  # stage item index, -1 unknown
        self.stamp = stamp  # int64 ns
        self.basket = basket  # int64 code
        self.quantity = quantity
        self.purchase = purchase
        self.weight = weight
        self.fresh = fresh  # bool: since the cutoff
        self.key = key  # int64: distinct per item id (unknown items too)

    def __len__(self) -> int:
        return len(self.item)


class OnlineRanker:
    """Per-request scoring with a fitted `HybridRecommender` (read-only after init)."""

    def __init__(self, hybrid: HybridRecommender) -> None:
        stage, ranker = hybrid._fitted()
        self.hybrid = hybrid
        self.stage = stage
        self.ranker = ranker
        self.config = hybrid.config
        self.weights = self.config.event_weights()
        self.booster = ranker.booster
        self.best_iteration = ranker._best()
        # features some tree splits on: the others cannot move a score (explanations skip them)
        split = self.booster.feature_importance("split", iteration=self.best_iteration)
        self.split_features = np.asarray(split) > 0
        self.feature_order = list(ranker.features)
        # lists depend on the request's device or placement only where a tree splits on one
        self.reads_context = any(
            self.split_features[self.feature_order.index(key)]
            for key in CONTEXT_KEYS
            if key in self.feature_order
        )
        builder = stage.features
        self.builder = builder
        self.cutoff_ns = int(builder.cutoff.value)
        self.n_items = stage.n_items
        self.item_index = {str(t): i for i, t in enumerate(stage.item_ids)}
        self.item_table = builder.item_table[list(ITEM_FEATURES)].to_numpy(np.float64)
        self.price = np.asarray(builder.price, np.float64)
        self.category_code = _group_codes(builder.category)
        self.brand_code = _group_codes(builder.brand)
        self.category_of = _code_of(builder.category, self.category_code)
        self.brand_of = _code_of(builder.brand, self.brand_code)
        users = builder.item_table["item_users"].to_numpy(np.float64)
        self.category_users = pd.Series(users).groupby(builder.category).sum().to_dict()
        self.exposure = hybrid.exposure
        self.generated: CandidateCache[Generated] = CandidateCache()
        self._index_events(builder.events)

    # -- load-time tables ------------------------------------------------------------------------
    def _index_events(self, events: pd.DataFrame) -> None:
        """Every user's events, grouped by user and in time order, as flat arrays."""
        users, codes = pd.factorize(events["user_id"], sort=False)
        order = np.argsort(users, kind="stable")  # events are in time order already
        users = users[order]
        picked = events.iloc[order]
        self.user_row = {str(u): i for i, u in enumerate(codes)}
        self.indptr = np.searchsorted(users, np.arange(len(codes) + 1)).astype(np.int64)
        self.ev_item = pd.Index(self.stage.item_ids).get_indexer(picked["item_id"]).astype(np.int64)
        self.ev_stamp = _ns(picked["timestamp"])
        basket_codes, baskets = pd.factorize(picked["basket"])
        self.basket_code = {str(b): i for i, b in enumerate(baskets)}
        self.ev_basket = basket_codes.astype(np.int64)
        self.ev_quantity = picked["quantity"].to_numpy(np.float64)
        self.ev_purchase = (picked["event_type"] == PURCHASE).to_numpy()
        self.ev_weight = picked["weight"].to_numpy(np.float64)

    def user_events(
        self, user_id: str | None, fresh: Sequence[FreshEvent], now_ns: int
    ) -> _UserEvents:
        """The user's trained events, then the fresh ones of positive weight before `now`."""
        return self._joined(user_id, self._since(fresh, now_ns))

    def _since(self, fresh: Sequence[FreshEvent], now_ns: int) -> _UserEvents:
        """The fresh events of positive weight before `now`, as arrays."""
        kept = [e for e in fresh if self.weights.get(e.event_type, 0.0) > 0 and e.ts_ns < now_ns]
        item = np.fromiter((self.item_index.get(e.item_id, -1) for e in kept), np.int64)
        unknown: dict[str, int] = {}
        key = np.fromiter(
            (
                i if i >= 0 else -1 - unknown.setdefault(e.item_id, len(unknown))
                for e, i in zip(kept, item.tolist(), strict=True)
            ),
            np.int64,
        )
        stamp = np.fromiter((e.ts_ns for e in kept), np.int64)
        # a fresh event's basket is its own moment (no order id reaches a request)
        _, moment = np.unique(stamp, return_inverse=True)
        return _UserEvents(
            item=item,
            stamp=stamp,
            basket=len(self.basket_code) + moment.astype(np.int64),
            quantity=np.ones(len(kept)),
            purchase=np.asarray([e.event_type == PURCHASE for e in kept], bool),
            weight=np.asarray([self.weights[e.event_type] for e in kept], np.float64),
            # as offline: only what happened at or after the cutoff joins the history rows
            fresh=stamp >= self.cutoff_ns,
            key=key,
        )

    def _joined(self, user_id: str | None, since: _UserEvents) -> _UserEvents:
        """The user's trained events followed by `since`."""
        row = None if user_id is None else self.user_row.get(str(user_id))
        lo, hi = (0, 0) if row is None else (int(self.indptr[row]), int(self.indptr[row + 1]))
        return _UserEvents(
            item=np.concatenate([self.ev_item[lo:hi], since.item]),
            stamp=np.concatenate([self.ev_stamp[lo:hi], since.stamp]),
            basket=np.concatenate([self.ev_basket[lo:hi], since.basket]),
            quantity=np.concatenate([self.ev_quantity[lo:hi], since.quantity]),
            purchase=np.concatenate([self.ev_purchase[lo:hi], since.purchase]).astype(bool),
            weight=np.concatenate([self.ev_weight[lo:hi], since.weight]).astype(np.float64),
            fresh=np.concatenate([np.zeros(hi - lo, bool), since.fresh]),
            key=np.concatenate([self.ev_item[lo:hi], since.key]),
        )

    # -- the request -----------------------------------------------------------------------------
    def request(
        self,
        user_id: str | None,
        events: _UserEvents,
        extra_history: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> dict[object, CandidateRequest]:
        """Per matrix, the history / recent / exclusion rows `Stage.request` would build.

        `extra_history` (stage item indices, weights) stands in for a user the pipeline has
        no events of, e.g. a history row handed to `Recommender.score`.
        """
        f_cols, f_vals = self._fresh(events, extra_history)
        recent = self._recent(events)
        out: dict[object, CandidateRequest] = {}
        for key, data in self.stage.matrices.items():
            row = data.user_index.get(str(user_id)) if user_id is not None else None
            cols, vals = f_cols, f_vals
            if row is not None:
                lo, hi = data.matrix.indptr[row], data.matrix.indptr[row + 1]
                cols = np.concatenate([data.matrix.indices[lo:hi], f_cols])
                vals = np.concatenate([data.matrix.data[lo:hi], f_vals])
            histories = _row(cols, vals, self.n_items)
            seen = histories.indices[histories.data > 0]
            exclude = _row(seen, np.ones(len(seen), np.float32), self.n_items)
            keep_seen = self.config.protocol == "repeat"
            out[key] = CandidateRequest(histories, recent, exclude, keep_seen)
        return out

    def _fresh(
        self, events: _UserEvents, extra: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items and weights of what happened since the cutoff (full weight: it is newest)."""
        late = events.fresh & (events.item >= 0)
        cols, vals = [events.item[late]], [events.weight[late].astype(np.float32)]
        if extra is not None and len(extra[0]):
            ok = (extra[0] >= 0) & (extra[0] < self.n_items)
            cols.append(np.asarray(extra[0], np.int64)[ok])
            vals.append(np.asarray(extra[1], np.float32)[ok])
        return np.concatenate(cols).astype(np.int64), np.concatenate(vals)

    def _recent(self, events: _UserEvents) -> sp.csr_matrix:
        """The last `recent_items` distinct items, weights 1, 1/2, 1/3, ... (as `Stage._recent`)."""
        order = np.argsort(-events.stamp, kind="stable")
        _, first = np.unique(events.key[order], return_index=True)
        latest = order[np.sort(first)][: self.config.recent_items]
        position = np.arange(len(latest))
        cols = events.item[latest]
        ok = cols >= 0
        weights = (1.0 / (1.0 + position[ok])).astype(np.float32)
        return _row(cols[ok], weights, self.n_items)

    def candidates(
        self,
        requests: dict[object, CandidateRequest],
        between: Callable[[], None] | None = None,
    ) -> CandidateSet:
        """`candidates.generate` for one row without its batch machinery: each generator's
        top n after its exclusions (`Recommender.request_top`, no catalogue-wide row where
        the model allows), then the same `merge`. `between` runs after each generator (a background
        caller yields the interpreter there)."""
        tops = {}
        blocked: dict[object, np.ndarray | None] = {}
        for generator in self.stage.generators:
            if between is not None:
                between()
            key = generator.half_life_days
            request = requests[key]
            if key not in blocked:
                blocked[key] = _blocked(request.exclude, self.n_items)
            tops[generator.name] = self._generator_top(generator, request, blocked[key])
        return merge(tops, 1, self.n_items)

    def _generator_top(
        self, generator: Generator, request: CandidateRequest, had: np.ndarray | None
    ) -> TopK:
        """What `Generator.generate` gives for this one row, by the request shortcuts."""
        assert generator.model is not None
        rows, n = generator._rows(request), generator.n
        if generator.proposes_own_items or had is None:
            return generator.model.request_top(rows, n, None)
        if not request.keep_seen:
            return generator.model.request_top(rows, n, had)
        top = generator.model.request_top(rows, n + int(had.sum()), None)
        return keep_new(top, had[np.maximum(top.items, 0)] & (top.items >= 0), n)

    def generation_key(self, user_id: str | None, since: _UserEvents) -> GenerationKey:
        """What generation and the event facts read of a shopper: the trained row (by user)
        and the fresh events' item keys, times, weights and purchase flags; equal keys,
        equal candidate sets and facts."""
        row = None if user_id is None else self.user_row.get(str(user_id))
        return (
            -1 if row is None else row,
            since.key.tobytes(),
            since.stamp.tobytes(),
            since.weight.tobytes(),
            since.purchase.tobytes(),
        )

    def prepare(
        self,
        who: str,
        user_id: str | None,
        fresh: Sequence[FreshEvent],
        now_ns: int,
        between: Callable[[], None] | None = None,
    ) -> bool:
        """Generate this shopper's candidates and their event facts now and keep them for
        their next request; False when they were kept for these very events already."""
        now = max(int(now_ns), self.cutoff_ns)
        return not self._generated(who, user_id, self._since(fresh, now), None, between)[1]

    def _generated(
        self,
        who: str | None,
        user_id: str | None,
        since: _UserEvents,
        extra_history: tuple[np.ndarray, np.ndarray] | None,
        between: Callable[[], None] | None = None,
    ) -> tuple[Generated, bool]:
        """The shopper's rows, candidates and event facts, from the cache when its key
        matches this request's; (what was generated, found in the cache)."""
        if who is None or extra_history is not None:
            return self._generate(user_id, since, extra_history, between), False
        key = self.generation_key(user_id, since)
        found = self.generated.get(who, key)
        if found is not None:
            return found, True
        generated = self._generate(user_id, since, None, between)
        self.generated.put(who, key, generated)
        return generated, False

    def _generate(
        self,
        user_id: str | None,
        since: _UserEvents,
        extra_history: tuple[np.ndarray, np.ndarray] | None,
        between: Callable[[], None] | None,
    ) -> Generated:
        events = self._joined(user_id, since)
        requests = self.request(user_id, events, extra_history)
        candidates = self.candidates(requests, between)
        return Generated(requests, candidates, self.event_facts(candidates, events))

    # -- features --------------------------------------------------------------------------------
    def event_facts(
        self, candidates: CandidateSet, events: _UserEvents, new: NewItems | None = None
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

    def _user_facts(self, ev: _UserEvents) -> tuple[dict[str, float], int | None, int | None]:
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

    def _attributes(self, items: np.ndarray, new: NewItems | None) -> _Attributes:
        """Item features, price, category and brand codes per candidate."""
        category, brand = self._group_codes_of(items, new)
        inside = items < self.n_items
        if inside.all():
            return _Attributes(self.item_table[items], self.price[items], category, brand)
        assert new is not None
        at = items[~inside] - self.n_items
        safe = np.where(inside, items, 0)
        table = self.item_table[safe]
        table[~inside] = self._new_item_table(new)[at]
        price = np.where(inside, self.price[safe], 0.0)
        price[~inside] = new.price[at]
        return _Attributes(table, price, category, brand)

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

    # -- scoring ---------------------------------------------------------------------------------
    def score(
        self,
        user_id: str | None,
        fresh: Sequence[FreshEvent] = (),
        now_ns: int | None = None,
        context: RankingContext | None = None,
        *,
        pool: np.ndarray | None = None,
        extra_history: tuple[np.ndarray, np.ndarray] | None = None,
        new: NewItems | None = None,
        cache_as: str | None = None,
    ) -> OnlineScored:
        """Candidates of one shopper with ranker and ordering scores.

        `pool` (stage item indices) joins the generators' candidates, as rows no generator
        proposed; `new` items join as candidate n_items + j, proposed by the content generator
        where their content is as close to the shopper's as its own proposals. `now_ns`
        defaults to the cutoff and is never before it. `cache_as` names the shopper whose
        candidates `prepare` may have generated already (`generated`, used when its key is
        this request's); the request generates them otherwise, and keeps them.
        """
        now = self.cutoff_ns if now_ns is None else max(int(now_ns), self.cutoff_ns)
        since = self._since(fresh, now)
        generated, hit = self._generated(cache_as, user_id, since, extra_history)
        requests, cands, facts = generated
        grown = False
        if pool is not None and len(pool):
            cands, grown = _with_pool(cands, np.asarray(pool, np.int64)), True
        if new is not None and len(new):
            cands, grown = self._with_new(cands, requests, new), True
        if grown:  # the kept facts are those of the generated rows only
            facts = self.event_facts(cands, self._joined(user_id, since), new)
        x = self.timed_features(cands, facts, now, context, new)
        raw = (
            # one thread: a few hundred rows cost less than waking a second one
            self.booster.predict(x, num_iteration=self.best_iteration, num_threads=1)
            if len(x)
            else np.zeros(0, np.float64)
        )
        order = self._ordering(cands, raw, requests[_default_key(requests)])
        return OnlineScored(cands, x, raw, order, requests[_default_key(requests)], hit)

    def _with_new(
        self, cands: CandidateSet, requests: dict[object, CandidateRequest], new: NewItems
    ) -> CandidateSet:
        """New items as extra rows with the content generator's score and rank, as if the
        catalogue had held them at training."""
        width = len(cands.generators)
        scores = np.full((len(new), width), np.nan, np.float32)
        ranks = np.full((len(new), width), MISSING_RANK, np.float32)
        content = next((g for g in self.stage.generators if g.name == "content"), None)
        if content is not None and isinstance(content.model, ContentModel):
            rows = content._rows(requests[content.half_life_days])
            if rows.nnz:
                profile = content.model.profiles(rows)
                mine = np.asarray((profile @ new.vectors.T).todense(), np.float32).ravel()
                g = cands.generators.index("content")
                theirs = cands.scores[:, g]
                rank = 1.0 + (theirs[~np.isnan(theirs)][None, :] > mine[:, None]).sum(axis=1)
                proposed = (rank <= content.n) & (mine > 0)
                scores[proposed, g] = mine[proposed]
                ranks[proposed, g] = rank[proposed]
        return CandidateSet(
            np.zeros(len(cands) + len(new), np.int64),
            np.concatenate([cands.items, self.n_items + np.arange(len(new))]),
            np.vstack([cands.scores, scores]),
            np.vstack([cands.ranks, ranks]),
            cands.generators,
            1,
        )

    def _ordering(
        self, cands: CandidateSet, raw: np.ndarray, request: CandidateRequest
    ) -> np.ndarray:
        """`Scored.ordering` for one user: exposure penalty, cold-start fallback."""
        score = np.asarray(raw, np.float64)
        penalty = self.config.exposure_penalty
        if penalty > 0 and self.exposure is not None:
            inside = cands.items < self.n_items
            share = np.zeros(len(cands.items))
            share[inside] = self.exposure[cands.items[inside]]
            score = score - penalty * np.log1p(EXPOSURE_SCALE * share)
        name = self.config.cold_start_generator
        if name is not None and name in cands.generators and request.histories.nnz == 0:
            fallback = cands.scores[:, cands.generators.index(name)]
            score = np.where(np.isnan(fallback), -np.inf, fallback).astype(np.float64)
        return score


def _blocked(exclude: sp.csr_matrix | None, n_items: int) -> np.ndarray | None:
    if exclude is None:
        return None
    blocked = np.zeros(n_items, bool)
    blocked[exclude.indices[exclude.data != 0]] = True
    return blocked


def _default_key(requests: dict[object, CandidateRequest]) -> object:
    return "default" if "default" in requests else next(iter(requests))


def _with_pool(cands: CandidateSet, pool: np.ndarray) -> CandidateSet:
    """The candidates plus pool items nobody proposed (no generator score, missing ranks)."""
    extra = np.setdiff1d(pool, cands.items)
    if not len(extra):
        return cands
    width = len(cands.generators)
    items = np.concatenate([cands.items, extra])
    order = np.argsort(items, kind="stable")
    scores = np.vstack([cands.scores, np.full((len(extra), width), np.nan, np.float32)])
    ranks = np.vstack([cands.ranks, np.full((len(extra), width), MISSING_RANK, np.float32)])
    return CandidateSet(
        np.zeros(len(items), np.int64),
        items[order],
        scores[order],
        ranks[order],
        cands.generators,
        1,
    )


def _code_of(values: np.ndarray, codes: np.ndarray) -> dict[str, int]:
    return {str(v): int(c) for v, c in zip(values, codes, strict=True) if c >= 0}


def _group_codes(values: np.ndarray) -> np.ndarray:
    codes, _ = pd.factorize(np.where(values == "", None, values))
    return codes.astype(np.int64)


def _ns(stamps: pd.Series) -> np.ndarray:
    return stamps.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _row(cols: np.ndarray, vals: np.ndarray, n_items: int) -> sp.csr_matrix:
    """A 1 × n_items float32 CSR row, repeated columns summed, zeros dropped (as scipy's
    sum of rows would leave them)."""
    if len(cols) > 1:
        cols, inverse = np.unique(cols, return_inverse=True)
        vals = np.bincount(inverse, weights=vals).astype(np.float32)
    vals = np.asarray(vals, np.float32)
    keep = vals != 0
    cols, vals = np.asarray(cols, np.int32)[keep], vals[keep]
    return sp.csr_matrix(
        (vals, cols, np.asarray([0, len(cols)], np.int32)), shape=(1, n_items), copy=False
    )


def _shares(rows: np.ndarray, shares: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per candidate, the user's share of events in its group: 0 none, NaN no group."""
    out = np.zeros(len(codes))
    out[rows] = shares
    out[codes < 0] = np.nan
    return out


def _ages(now_ns: int, stamps: np.ndarray) -> np.ndarray:
    """Days from each stamp to `now_ns`, as `FeatureBuilder` counts them."""
    return (now_ns - stamps).astype(np.float64) / DAY_NS
