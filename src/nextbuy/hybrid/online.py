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
    PURCHASE,
    RankingContext,
)
from nextbuy.hybrid.online_events import (
    FreshEvent,
    Generated,
    NewItems,
    OnlineScored,
    UserEvents,
)
from nextbuy.hybrid.online_features import OnlineFeatures
from nextbuy.hybrid.pipeline import HybridRecommender
from nextbuy.hybrid.stage import EXPOSURE_SCALE
from nextbuy.models.base import TopK


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
        self.features = OnlineFeatures(builder, self.feature_order, self.n_items)
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
    ) -> UserEvents:
        """The user's trained events, then the fresh ones of positive weight before `now`."""
        return self._joined(user_id, self._since(fresh, now_ns))

    def _since(self, fresh: Sequence[FreshEvent], now_ns: int) -> UserEvents:
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
        return UserEvents(
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

    def _joined(self, user_id: str | None, since: UserEvents) -> UserEvents:
        """The user's trained events followed by `since`."""
        row = None if user_id is None else self.user_row.get(str(user_id))
        lo, hi = (0, 0) if row is None else (int(self.indptr[row]), int(self.indptr[row + 1]))
        return UserEvents(
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
        events: UserEvents,
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
        self, events: UserEvents, extra: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Items and weights of what happened since the cutoff (full weight: it is newest)."""
        late = events.fresh & (events.item >= 0)
        cols, vals = [events.item[late]], [events.weight[late].astype(np.float32)]
        if extra is not None and len(extra[0]):
            ok = (extra[0] >= 0) & (extra[0] < self.n_items)
            cols.append(np.asarray(extra[0], np.int64)[ok])
            vals.append(np.asarray(extra[1], np.float32)[ok])
        return np.concatenate(cols).astype(np.int64), np.concatenate(vals)

    def _recent(self, events: UserEvents) -> sp.csr_matrix:
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
        rows, n = generator.rows(request), generator.n
        if generator.proposes_own_items or had is None:
            return generator.model.request_top(rows, n, None)
        if not request.keep_seen:
            return generator.model.request_top(rows, n, had)
        top = generator.model.request_top(rows, n + int(had.sum()), None)
        return keep_new(top, had[np.maximum(top.items, 0)] & (top.items >= 0), n)

    def generation_key(self, user_id: str | None, since: UserEvents) -> GenerationKey:
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
        since: UserEvents,
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
        since: UserEvents,
        extra_history: tuple[np.ndarray, np.ndarray] | None,
        between: Callable[[], None] | None,
    ) -> Generated:
        events = self._joined(user_id, since)
        requests = self.request(user_id, events, extra_history)
        candidates = self.candidates(requests, between)
        return Generated(requests, candidates, self.features.event_facts(candidates, events))

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
            facts = self.features.event_facts(cands, self._joined(user_id, since), new)
        x = self.features.timed_features(cands, facts, now, context, new)
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
        content = next((g for g in self.stage.generators if g.content_model() is not None), None)
        model = None if content is None else content.content_model()
        if content is not None and model is not None:
            rows = content.rows(requests[content.half_life_days])
            if rows.nnz:
                profile = model.profiles(rows)
                mine = np.asarray((profile @ new.vectors.T).todense(), np.float32).ravel()
                g = cands.generators.index(content.name)
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
