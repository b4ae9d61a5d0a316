"""Candidate generators and how their lists are merged into one ranked list for the rules.

Each generator returns a Segment (catalogue indices best first, raw scores, an origin).
Segments are merged in order of trust: complements of what the shopper just bought or put
in the cart, then the personal model, then the context and cold-start lists (page
category, onboarding answers, trending, popular). Scores are mapped into one band per
segment, each band below the previous, so the merged list is sorted by score and a rule's
boost (score × factor) can move an item across positions in a way that means something:
band scores lie in [0, 1] and keep the raw scores' proportions within a segment.

Unavailable items (out of stock, deleted) never pass the merge, whatever the rules say.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nextbuy.models.base import best_of
from nextbuy.models.requests import RankingContext
from nextbuy.rules import Candidates
from nextbuy.serving.live import Live
from nextbuy.serving.online import shopper_key
from nextbuy.serving.segment import Segment
from nextbuy.serving.shopper import Shopper

if TYPE_CHECKING:
    from nextbuy.serving.metrics import Metrics

# Width of each origin's score band, from the top (1.0) down.
BAND = {"complement": 0.1, "personal": 0.4, "cart": 0.4, "similar": 0.5}
DEFAULT_BAND = 0.12
RESERVE_SHARE = 4  # 1/4 of the candidates is kept for the segments after the first full one
COMPLEMENTS_PER_ITEM = 3
COMPLEMENT_POOL = 20  # partners looked at per item, before the ones already seen go
COMPLEMENT_ANCHORS = 2  # latest purchased / carted items whose complements lead the list
COMPLEMENT_WINDOW_MS = 6 * 3_600_000  # an intent older than this no longer leads the list
# The pool a shopper with events since training is scored on (see candidate_pool).
POOL_ANCHORS = 5  # latest items whose basket partners join the pool
POOL_SIMILAR_ANCHORS = 2  # latest items whose model neighbours join the pool
POOL_NEIGHBOURS = 50  # model-similar items per anchor
POOL_PARTNERS = 20  # bought-together partners per anchor
POOL_NON_PERSONAL = 100  # trending items
POOL_HEAD = 2000  # most popular items: scoring them is one small product


@dataclass
class Merged:
    cands: Candidates
    anchors: dict[int, int]
    labels: dict[int, str]
    barred: np.ndarray | None = None  # per catalogue item: unavailable or excluded


def personal(
    live: Live,
    shopper: Shopper,
    n: int,
    exclude_seen: bool,
    metrics: Metrics | None = None,
    context: RankingContext | None = None,
) -> Segment | None:
    """The model's top n: precomputed when nothing happened since training and the model's
    ranking does not depend on the request's context, else ranked for this request."""
    if not shopper.personal or not shopper.has_history:
        return None
    found = None
    if shopper.trained and shopper.user_id is not None:
        found = live.model.precomputed(shopper.user_id)
        in_context = context is not None and live.model.model.reads_request_context
        if found is not None and not shopper.recent and not in_context:
            return Segment(found[0][:n], found[1][:n], "personal")
    path = live.model.model.request_path()
    if path is not None:  # the model proposes and ranks its own candidates
        key = shopper_key(shopper.user_id, shopper.session_id)
        ranking = path.rank(shopper, key, n, exclude_seen, context, live.catalog, live.new_items)
        if metrics is not None:
            outcome = "ranked_ahead" if ranking.generated_ahead else "generated_inline"
            metrics.candidate_sets.labels(outcome).inc()
        shopper.ranking = ranking
        return Segment(ranking.items, ranking.scores, "personal")
    pool = candidate_pool(live, shopper, None if found is None else found[0])
    scores = live.model.model.pool_scores(shopper.cols, shopper.vals, pool)
    if exclude_seen:
        scores[np.isin(pool, shopper.cols)] = -np.inf
    best, values = best_of(scores, n)
    return Segment(pool[best], values, "personal")


def candidate_pool(live: Live, shopper: Shopper, precomputed: np.ndarray | None) -> np.ndarray:
    """What a shopper with new events is scored on: their precomputed list, neighbours of
    what they just did (model-similar and bought-together), trending and popular items."""
    model = live.model
    parts = [model.trending[:POOL_NON_PERSONAL], model.popular[:POOL_HEAD]]
    if precomputed is not None:
        parts.append(precomputed)
    index = model.data.item_index
    anchors: list[int] = []
    for event in reversed(shopper.recent):
        col = index.get(event.item_id)
        if col is not None and col not in anchors:
            anchors.append(col)
            if len(anchors) == POOL_ANCHORS:
                break
    if precomputed is None and len(anchors) < POOL_ANCHORS and len(shopper.cols):
        # no precomputed list (an anonymous or erased shopper): their heaviest items count
        heaviest = shopper.cols[np.argsort(-shopper.vals, kind="stable")[:POOL_ANCHORS]]
        anchors += [int(c) for c in heaviest if int(c) not in anchors][
            : POOL_ANCHORS - len(anchors)
        ]
    # Model neighbours of a factor model take a pass over the whole catalogue; the popular
    # head in the pool stands in for them there. Basket partners are a sorted sparse row.
    cheap_neighbours = model.model.cheap_similar
    for rank, anchor in enumerate(anchors):
        if cheap_neighbours and rank < POOL_SIMILAR_ANCHORS:
            parts.append(model.similar(anchor, POOL_NEIGHBOURS)[0])
        parts.append(model.bought_together(anchor, POOL_PARTNERS)[0])
    # a flag per item unites the parts faster than sorting them (np.unique)
    member = np.zeros(model.n_items, bool)
    for part in parts:
        member[part] = True
    return np.flatnonzero(member)


def complements(live: Live, shopper: Shopper) -> Segment | None:
    """What goes with the items the shopper just bought or put in the cart."""
    if live.model.fbt is None or not shopper.recent:
        return None
    index = live.model.data.item_index
    anchors: list[int] = []
    since = time.time() * 1000 - COMPLEMENT_WINDOW_MS
    for event in reversed(shopper.recent):
        if event.ts_ms < since:
            break
        col = index.get(event.item_id)
        if event.event_type in ("purchase", "add_to_cart") and col is not None:
            if col not in anchors:
                anchors.append(col)
            if len(anchors) == COMPLEMENT_ANCHORS:
                break
    if not anchors:
        return None
    seen = set(shopper.cols.tolist())
    picks: list[list[tuple[int, float]]] = []
    for anchor in anchors:
        items, scores = live.model.bought_together(anchor, COMPLEMENT_POOL)
        fresh = [
            (i, s) for i, s in zip(items.tolist(), scores.tolist(), strict=True) if i not in seen
        ]
        picks.append(fresh[:COMPLEMENTS_PER_ITEM])
    items_out, scores_out, origin_of = [], [], {}
    # interleave: the best partner of each anchor before any second one
    for rank in range(COMPLEMENTS_PER_ITEM):
        for anchor, found in zip(anchors, picks, strict=True):
            if rank < len(found) and found[rank][0] not in origin_of:
                origin_of[found[rank][0]] = anchor
                items_out.append(found[rank][0])
                scores_out.append(found[rank][1])
    if not items_out:
        return None
    return Segment(np.asarray(items_out, np.int64), np.asarray(scores_out), "complement", origin_of)


def trending(live: Live, category: str | None = None) -> Segment:
    model = live.model
    if not category:
        return Segment(model.trending, model.trending_ranked_scores, "trending")
    items = model.trending
    allowed = live.category_items(category)
    items = items[np.isin(items, allowed)] if len(allowed) else items[:0]
    label = live.category_name(category)
    return Segment(items, model.trending_scores[items], "trending", label=label)


def popular(live: Live) -> Segment:
    return Segment(live.model.popular, live.model.popular_ranked_scores, "popular")


def category_bestsellers(live: Live, category: str) -> Segment:
    items = live.category_items(category)
    return Segment(items, live.popularity[items], "category", label=live.category_name(category))


def onboarding(live: Live, shopper: Shopper) -> Segment | None:
    """Best sellers matching what a new customer said they like."""
    answers = shopper.profile.onboarding if shopper.profile else None
    if answers is None or answers.empty:
        return None
    names: dict[int, str] = {}
    if answers.categories:
        pools = []
        for category in answers.categories:
            pool = live.category_items(category)
            if len(pool):
                pools.append(pool)
                name = live.category_name(category)
                names.update((i, name) for i in pool.tolist() if i not in names)
        items = _round_robin(pools)
    else:
        items = live.model.popular
    catalog = live.catalog
    keep = np.ones(len(items), bool)
    if answers.brands:
        wanted = {b.strip().casefold() for b in answers.brands}
        brands = catalog.brand[items]
        keep &= np.fromiter((b is not None and b.casefold() in wanted for b in brands), bool)
    price = catalog.price[items]
    with np.errstate(invalid="ignore"):
        if answers.price_min is not None:
            keep &= price >= answers.price_min
        if answers.price_max is not None:
            keep &= price <= answers.price_max
    items = items[keep]
    # interleaved categories are not in popularity order: score by rank instead
    scores = np.linspace(1.0, 0.0, len(items) + 1)[:-1]
    return Segment(items, scores, "onboarding", item_labels=names)


def new_arrivals(live: Live) -> Segment:
    items = live.fresh
    return Segment(items, np.linspace(1.0, 0.5, len(items)), "new")


def _round_robin(pools: list[np.ndarray]) -> np.ndarray:
    """The first of each pool, then the seconds, ...: every chosen category gets a say."""
    if not pools:
        return np.zeros(0, np.int64)
    width = max(len(p) for p in pools)
    grid = np.full((len(pools), width), -1, np.int64)
    for row, pool in enumerate(pools):
        grid[row, : len(pool)] = pool
    flat = grid.T.ravel()
    flat = flat[flat >= 0]
    _, first = np.unique(flat, return_index=True)
    return flat[np.sort(first)]


def merge(
    live: Live,
    segments: list[Segment | None],
    n: int,
    exclude: np.ndarray | None = None,
) -> Merged:
    """One list of at most n available candidates, best first, each item once."""
    # One flag per catalogue item marks what may not (or no longer) be added: unavailable,
    # excluded, already taken. Allocating it costs microseconds; set lookups cost more.
    barred = ~live.catalog.available
    if exclude is not None and len(exclude):
        barred[exclude[(exclude >= 0) & (exclude < len(barred))]] = True
    blocked = barred.copy()
    items_out, scores_out, origins, counts = [], [], [], []
    anchors: dict[int, int] = {}
    labels: dict[int, str] = {}
    top, total = 1.0, 0
    # Later segments keep a share of the candidates: a placement that caps a category
    # (diversity) or filters one out still finds enough other items to fill k.
    reserve = n // RESERVE_SHARE
    for part in segments:
        if part is None or not len(part):
            continue
        picked = _first_free(part.items, blocked, min(max(n - total - reserve, reserve), n - total))
        items = part.items[picked]
        width = BAND.get(part.origin, DEFAULT_BAND)
        if len(items):
            raw = np.asarray(part.scores[picked], np.float64)
            blocked[items] = True
            items_out.append(items)
            scores_out.append(_band(raw, top, width))
            origins.append(part.origin)
            counts.append(len(items))
            total += len(items)
            if part.anchors:
                anchors.update((i, part.anchors[i]) for i in items.tolist() if i in part.anchors)
            if part.label:
                labels.update(dict.fromkeys(items.tolist(), part.label))
            elif part.item_labels:
                found = part.item_labels
                labels.update((i, found[i]) for i in items.tolist() if i in found)
        top = max(top - width, 0.0)
        if total >= n:
            break
    if not items_out:
        empty = np.zeros(0, np.int64)
        return Merged(Candidates(empty, empty.astype(float), _none(0), _none(0)), {}, {}, barred)
    items = np.concatenate(items_out)
    origin = np.repeat(np.array(origins, dtype=object), counts)
    cands = Candidates(items, np.concatenate(scores_out), _none(len(items)), origin)
    return Merged(cands, anchors, labels, barred)


def _first_free(items: np.ndarray, blocked: np.ndarray, want: int) -> np.ndarray:
    """Positions of the first `want` items not blocked. Trending and popular segments are
    thousands of items long and a short prefix nearly always holds enough."""
    span = min(len(items), 2 * want + 16)
    while True:
        free = np.flatnonzero(~blocked[items[:span]])
        if len(free) >= want or span == len(items):
            return free[:want]
        span = min(len(items), span * 4)


def insert_new_arrival(live: Live, merged: Merged, k: int) -> Merged:
    """Puts the newest new arrival not yet in the top k at position k (its last), if any."""
    fresh = live.fresh
    if not len(fresh) or k < 1:
        return merged
    cands = merged.cands
    top = set(cands.items[:k].tolist())
    barred = merged.barred
    item = next(
        (i for i in fresh.tolist() if i not in top and (barred is None or not barred[i])), None
    )
    if item is None:
        return merged
    rest = cands.items != item
    if not rest.all():
        cands = cands.take(rest)
    at = min(k - 1, len(cands))
    above = cands.scores[at - 1] if at > 0 else 1.0
    below = cands.scores[at] if at < len(cands) else 0.0
    merged.cands = Candidates(
        np.concatenate([cands.items[:at], [item], cands.items[at:]]),
        np.concatenate([cands.scores[:at], [(above + below) / 2], cands.scores[at:]]),
        np.concatenate([cands.reasons[:at], _none(1), cands.reasons[at:]]),
        np.concatenate([cands.origin[:at], np.array(["new"], dtype=object), cands.origin[at:]]),
    )
    return merged


def _band(raw: np.ndarray, top: float, width: float) -> np.ndarray:
    """Scores into (top - width, top], order and proportions kept (raw is best first)."""
    hi, lo = float(raw[0]), float(raw[-1])
    if not (np.isfinite(hi) and np.isfinite(lo)):
        finite = np.isfinite(raw)
        hi = float(raw[finite].max()) if finite.any() else 0.0
        lo = float(raw[finite].min()) if finite.any() else 0.0
        raw = np.where(finite, raw, lo)
    span = hi - lo
    scaled = (raw - lo) / span if span > 0 else np.linspace(1.0, 0.0, len(raw) + 1)[:-1]
    return (top - width) + width * (0.05 + 0.95 * scaled)


def _none(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out.fill(None)
    return out
