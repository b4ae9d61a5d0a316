"""The hybrid pipeline for one request: the same candidates, features and ranker, in numpy.

`HybridRecommender.score` builds features with pandas group-bys over every event of the users
asked for: right for thousands of users at once, tens of milliseconds for one. A request
serves one shopper, so `OnlineRanker` precomputes at load what does not change between
requests — the item features as of the cutoff, each user's events as sorted arrays, group
codes of categories and brands — and computes the rest for one user with small numpy
reductions over that user's events plus whatever they did since the cutoff.

The values are those of `FeatureBuilder.build` for the same user, events and request time
(tests/test_hybrid_online.py compares them row by row); candidates come from the very
generators the offline pipeline runs (`candidates.generate`), so a shopper's list online is
the list the offline pipeline would give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.hybrid.candidate_cache import CandidateCache, GenerationKey
from nextbuy.hybrid.candidates import (
    MISSING_RANK,
    CandidateRequest,
    CandidateSet,
    merge,
)
from nextbuy.hybrid.features import (
    DAY_NS,
    ITEM_FEATURES,
    PURCHASE,
    USER_FEATURES,
    RequestContext,
    _code,
)
from nextbuy.hybrid.pipeline import EXPOSURE_SCALE, HybridRecommender
from nextbuy.hybrid.request_tops import RequestTops
from nextbuy.models.base import Recommender
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
        self.feature_order = list(ranker.features)
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
        self.tops = RequestTops(self.n_items, self._scores)
        self.generated = CandidateCache()
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
        row = None if user_id is None else self.user_row.get(str(user_id))
        lo, hi = (0, 0) if row is None else (int(self.indptr[row]), int(self.indptr[row + 1]))
        kept = [e for e in fresh if self.weights.get(e.event_type, 0.0) > 0 and e.ts_ns < now_ns]
        f_item = np.fromiter((self.item_index.get(e.item_id, -1) for e in kept), np.int64)
        unknown: dict[str, int] = {}
        f_key = np.fromiter(
            (
                i if i >= 0 else -1 - unknown.setdefault(e.item_id, len(unknown))
                for e, i in zip(kept, f_item.tolist(), strict=True)
            ),
            np.int64,
        )
        f_stamp = np.fromiter((e.ts_ns for e in kept), np.int64)
        # a fresh event's basket is its own moment (no order id reaches a request)
        offset = len(self.basket_code)
        _, moment = np.unique(f_stamp, return_inverse=True)
        item = np.concatenate([self.ev_item[lo:hi], f_item])
        return _UserEvents(
            item=item,
            stamp=np.concatenate([self.ev_stamp[lo:hi], f_stamp]),
            basket=np.concatenate([self.ev_basket[lo:hi], offset + moment.astype(np.int64)]),
            quantity=np.concatenate([self.ev_quantity[lo:hi], np.ones(len(kept))]),
            purchase=np.concatenate(
                [self.ev_purchase[lo:hi], [e.event_type == PURCHASE for e in kept]]
            ).astype(bool),
            weight=np.concatenate(
                [self.ev_weight[lo:hi], [self.weights[e.event_type] for e in kept]]
            ).astype(np.float64),
            # as offline: only what happened at or after the cutoff joins the history rows
            fresh=np.concatenate([np.zeros(hi - lo, bool), f_stamp >= self.cutoff_ns]),
            key=np.concatenate([self.ev_item[lo:hi], f_key]),
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
            exclude = None
            if self.config.protocol == "discovery":
                seen = histories.indices[histories.data > 0]
                exclude = _row(seen, np.ones(len(seen), np.float32), self.n_items)
            out[key] = CandidateRequest(histories, recent, exclude)
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
        top n after its exclusions (`RequestTops`, no catalogue-wide row where the model
        allows), then the same `merge`. `between` runs after each generator (a background
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
            assert generator.model is not None
            tops[generator.name] = self.tops.top(
                generator.model, generator._rows(request), generator.n, blocked[key]
            )
        return merge(tops, 1, self.n_items)

    def generation_key(self, user_id: str | None, events: _UserEvents) -> GenerationKey:
        """What candidate generation reads of a shopper: the trained row (by user) and the
        fresh events' item keys, times and weights; equal keys, equal candidate sets."""
        row = None if user_id is None else self.user_row.get(str(user_id))
        trained = 0 if row is None else int(self.indptr[row + 1] - self.indptr[row])
        return (
            -1 if row is None else row,
            events.key[trained:].tobytes(),
            events.stamp[trained:].tobytes(),
            events.weight[trained:].tobytes(),
        )

    def prepare(
        self,
        who: str,
        user_id: str | None,
        fresh: Sequence[FreshEvent],
        now_ns: int,
        between: Callable[[], None] | None = None,
    ) -> bool:
        """Generate this shopper's candidates now and keep them for their next request;
        False when they were kept for these very events already."""
        now = max(int(now_ns), self.cutoff_ns)
        events = self.user_events(user_id, fresh, now)
        return not self._generated(who, user_id, events, None, between)[2]

    def _generated(
        self,
        who: str | None,
        user_id: str | None,
        events: _UserEvents,
        extra_history: tuple[np.ndarray, np.ndarray] | None,
        between: Callable[[], None] | None = None,
    ) -> tuple[dict[object, CandidateRequest], CandidateSet, bool]:
        """The shopper's rows and candidates, from the cache when its key matches this
        request's; (rows, candidates, found in the cache)."""
        if who is None or extra_history is not None:
            requests = self.request(user_id, events, extra_history)
            return requests, self.candidates(requests, between), False
        key = self.generation_key(user_id, events)
        found = self.generated.get(who, key)
        if found is not None:
            return found[0], found[1], True
        requests = self.request(user_id, events)
        cands = self.candidates(requests, between)
        self.generated.put(who, key, (requests, cands))
        return requests, cands, False

    def _scores(self, model: Recommender, rows: sp.csr_matrix) -> np.ndarray:
        """Dense scores of a model `RequestTops` has no shortcut for."""
        return np.array(model._score(rows), dtype=np.float32)

    # -- features --------------------------------------------------------------------------------
    def features(
        self,
        candidates: CandidateSet,
        events: _UserEvents,
        now_ns: int,
        context: RequestContext | None = None,
        new: NewItems | None = None,
    ) -> np.ndarray:
        """(n, n_features) float64 in the ranker's column order; `FeatureBuilder.build`'s
        values for the same candidates, events and request time. Candidate items past the
        stage's (n_items + j) are `new`'s j-th item."""
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
        age = (now_ns - events.stamp).astype(np.float64) / DAY_NS
        user = self._user_features(events, age)
        for name in USER_FEATURES:
            columns[name] = np.full(n, user[name])
        columns.update(self._pair_features(events, age, items, attrs, user["user_median_price"]))
        moment = pd.Timestamp(now_ns, tz="UTC")
        columns["hour"] = np.full(n, float(moment.hour))
        columns["weekday"] = np.full(n, float(moment.day_of_week))
        context = context or RequestContext()
        columns["device"] = np.full(n, _code(context.device))
        columns["placement"] = np.full(n, _code(context.placement))
        out = np.empty((n, len(self.feature_order)), np.float64)
        for j, name in enumerate(self.feature_order):
            out[:, j] = columns[name]
        return out

    def _user_features(self, ev: _UserEvents, age: np.ndarray) -> dict[str, float]:
        nan = float("nan")
        out = dict.fromkeys(USER_FEATURES, nan)
        out["user_baskets"] = out["user_events"] = 0.0
        known = ev.item >= 0
        out["user_items"] = float(len(np.unique(ev.item[known])))
        if not len(ev):
            return out
        out["user_days_since_last"] = float(age.min())
        out["user_tenure_days"] = float(age.max())
        out["user_events"] = float(len(ev))
        out["user_baskets"] = float(len(np.unique(ev.basket)))
        out["user_basket_size"] = out["user_events"] / out["user_baskets"]
        bought = known & ev.purchase if (known & ev.purchase).any() else known
        price = self.price[ev.item[bought]]
        paid = price * ev.quantity[bought]
        ok = ~(np.isnan(price) | np.isnan(paid))
        if ok.any():
            out["user_spend"] = float(pd.Series(paid[ok]).sum())
            out["user_median_price"] = float(np.median(price[ok]))
        return out

    def _attributes(self, items: np.ndarray, new: NewItems | None) -> _Attributes:
        """Item features, price, category and brand codes per candidate."""
        inside = items < self.n_items
        if inside.all():
            return _Attributes(
                self.item_table[items],
                self.price[items],
                self.category_code[items],
                self.brand_code[items],
            )
        assert new is not None
        at = items[~inside] - self.n_items
        safe = np.where(inside, items, 0)
        table = self.item_table[safe]
        table[~inside] = self._new_item_table(new)[at]
        price = np.where(inside, self.price[safe], 0.0)
        price[~inside] = new.price[at]
        category = self.category_code[safe]
        category[~inside] = [self.category_of.get(c, -1) for c in new.category[at]]
        brand = self.brand_code[safe]
        brand[~inside] = [self.brand_of.get(b, -1) for b in new.brand[at]]
        return _Attributes(table, price, category, brand)

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

    def _pair_features(
        self,
        ev: _UserEvents,
        age: np.ndarray,
        items: np.ndarray,
        attrs: _Attributes,
        median: float,
    ) -> dict[str, np.ndarray]:
        n = len(items)
        known = ev.item >= 0
        k_item, k_age, k_basket = ev.item[known], age[known], ev.basket[known]
        baskets = np.zeros(n)
        since = np.full(n, np.nan)
        gap = np.full(n, np.nan)
        if len(k_item) and n:
            # per candidate: its distinct baskets, and the youngest and oldest of its events
            back = np.argsort(items, kind="stable")
            sorted_items = items[back]
            pos = np.minimum(np.searchsorted(sorted_items, k_item), n - 1)
            hit = sorted_items[pos] == k_item
            at, h_age, h_basket = back[pos[hit]], k_age[hit], k_basket[hit]
            if len(at):
                pairs = np.unique(np.stack([at, h_basket]), axis=1)
                count = np.bincount(pairs[0], minlength=n)
                young = np.full(n, np.inf)
                old = np.full(n, -np.inf)
                np.minimum.at(young, at, h_age)
                np.maximum.at(old, at, h_age)
                touched = count > 0
                baskets[touched] = count[touched]
                since[touched] = young[touched]
                again = count > 1
                gap[again] = (old[again] - young[again]) / (count[again] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            due = since / gap
            vs_user = attrs.price / (median if median > 0 else np.nan)
        share_c, since_c = self._group(self.category_code, k_item, k_age, attrs.category)
        share_b, _ = self._group(self.brand_code, k_item, k_age, attrs.brand)
        return {
            "ui_baskets": baskets,
            "ui_days_since": since,
            "ui_mean_gap_days": gap,
            "ui_due": due,
            "price_vs_user": vs_user,
            "category_share": share_c,
            "category_days_since": since_c,
            "brand_share": share_b,
        }

    @staticmethod
    def _group(
        codes: np.ndarray, k_item: np.ndarray, k_age: np.ndarray, cand: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Share of the user's known events in each candidate's group (`cand`: the
        candidates' group codes), and days since the last one."""
        n = len(cand)
        total = max(len(k_item), 1)
        share = np.zeros(n)
        since = np.full(n, np.nan)
        if len(k_item) and n:
            ev_group = codes[k_item]
            mine = ev_group >= 0
            groups, mine_age = ev_group[mine], k_age[mine]
            if len(groups):
                width = int(max(groups.max(), cand.max(initial=-1))) + 1
                count = np.bincount(groups, minlength=width)
                youngest = np.full(width, np.nan)
                order = np.lexsort((mine_age, groups))
                first = np.unique(groups[order], return_index=True)[1]
                youngest[groups[order][first]] = mine_age[order][first]
                where = cand >= 0
                hits = where.copy()
                hits[where] = count[cand[where]] > 0
                share[hits] = count[cand[hits]] / total
                since[hits] = youngest[cand[hits]]
        share[cand < 0] = np.nan
        return share, since

    # -- scoring ---------------------------------------------------------------------------------
    def score(
        self,
        user_id: str | None,
        fresh: Sequence[FreshEvent] = (),
        now_ns: int | None = None,
        context: RequestContext | None = None,
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
        events = self.user_events(user_id, fresh, now)
        requests, cands, hit = self._generated(cache_as, user_id, events, extra_history)
        if pool is not None and len(pool):
            cands = _with_pool(cands, np.asarray(pool, np.int64))
        if new is not None and len(new):
            cands = self._with_new(cands, requests, new)
        x = self.features(cands, events, now, context, new)
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
