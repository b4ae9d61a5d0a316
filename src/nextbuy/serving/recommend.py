"""Request-time orchestration for every recommendation route: candidates, rules, reasons.

Each function reads one `Live` (model, catalogue, rules that belong together) and returns
the response body. Nothing here blocks on I/O: the store is only written by the event,
item and user routes, in a thread pool.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nextbuy.errors import DataError, NotFoundError
from nextbuy.models.base import best_of, history_row
from nextbuy.models.requests import RankingContext
from nextbuy.rules import Candidates, RequestContext, apply_rules
from nextbuy.serving import candidates as gen
from nextbuy.serving.explain import explain
from nextbuy.serving.live import Live, Placement
from nextbuy.serving.online import OnlineEvent
from nextbuy.serving.shopper import Shopper

if TYPE_CHECKING:
    from nextbuy.serving.state import ServingState

DAY_MS = 86_400_000
BUY_AGAIN_HALF_LIFE_DAYS = 90.0


@dataclass
class Ask:
    """What a recommendation request asks for."""

    user_id: str | None = None
    session_id: str | None = None
    k: int | None = None
    placement: str | None = None
    category: str | None = None
    context: dict[str, str] = field(default_factory=dict)


def placement_of(live: Live, name: str | None, default: str | None) -> Placement:
    """The named placement, the route's default one, or (neither configured) no rules."""
    chosen = name or default
    if chosen is None:
        return Placement("default", 10, 200)
    found = live.placements.get(chosen)
    if found is not None:
        return found
    if name is not None:
        known = ", ".join(sorted(live.placements))
        raise DataError(f"unknown placement {name!r} (configured: {known})")
    return Placement(chosen, 10, 200)


def for_user(state: ServingState, live: Live, ask: Ask) -> dict[str, Any]:
    """Recommended for you: personal when there is a history, cold-start lists otherwise."""
    placement = placement_of(live, ask.placement, "home")
    k = ask.k or placement.k
    n = max(placement.candidates, k)
    shopper = state.shopper(live, ask.user_id, ask.session_id)
    segments: list[gen.Segment | None] = []
    fallback = None
    if shopper.personal and shopper.has_history:
        exclude_seen = state.settings.training.excludes_seen(live.model.meta)
        segments += [
            gen.complements(live, shopper),
            gen.personal(
                live, shopper, n, exclude_seen, state.metrics, _ranking_context(ask, placement)
            ),
        ]
    else:
        fallback = _fallback_kind(shopper, ask)
        segments.append(gen.onboarding(live, shopper) if shopper.personal else None)
    if ask.category:
        segments.append(gen.category_bestsellers(live, ask.category))
    segments += [gen.trending(live), gen.popular(live)]
    if fallback is not None:
        state.metrics.cold_start.labels(fallback).inc()
    return _finish(state, live, placement, k, n, shopper, segments, ask)


def _ranking_context(ask: Ask, placement: Placement) -> RankingContext:
    """What a context-aware model ranks with: the request's device and its placement."""
    return RankingContext(device=ask.context.get("device"), placement=placement.name)


def _fallback_kind(shopper: Shopper, ask: Ask) -> str:
    if not shopper.personal:
        return "no_consent"
    if shopper.profile is not None and shopper.profile.onboarding is not None:
        return "onboarding"
    return "category" if ask.category else "trending"


def similar(state: ServingState, live: Live, item_id: str, ask: Ask) -> dict[str, Any]:
    """Items like this one (the model's item-item similarity), then its category's best."""
    item = _item_index(live, item_id)
    placement = placement_of(live, ask.placement, "product_page")
    k = ask.k or placement.k
    n = max(placement.candidates, k)
    segments = [_neighbours(live, item, n, "similar")]
    segments += _context_fallback(live, item)
    shopper = state.shopper(live, ask.user_id, ask.session_id)
    return _finish(state, live, placement, k, n, shopper, segments, ask, np.asarray([item]))


def bought_together(state: ServingState, live: Live, item_id: str, ask: Ask) -> dict[str, Any]:
    """Frequently bought with this item (basket pairs), then similar items, then its category."""
    item = _item_index(live, item_id)
    placement = placement_of(live, ask.placement, "product_page")
    k = ask.k or placement.k
    n = max(placement.candidates, k)
    segments = [
        _neighbours(live, item, n, "bought_together"),
        _neighbours(live, item, n, "similar"),
        *_context_fallback(live, item),
    ]
    shopper = state.shopper(live, ask.user_id, ask.session_id)
    return _finish(state, live, placement, k, n, shopper, segments, ask, np.asarray([item]))


def cart(state: ServingState, live: Live, item_ids: list[str], ask: Ask) -> dict[str, Any]:
    """Cross-sell for a basket: what is bought with its items, then the shopper's own picks."""
    placement = placement_of(live, ask.placement, "cart")
    k = ask.k or placement.k
    n = max(placement.candidates, k)
    shopper = state.shopper(live, ask.user_id, ask.session_id)
    in_cart = _known(live, item_ids)
    model_cart = in_cart[in_cart < live.model.n_items]
    segments: list[gen.Segment | None] = [_cart_segment(live, model_cart, n)]
    if len(model_cart) or shopper.has_history:
        # the cart counts as the newest part of the history: its items anchor the pool
        weight = state.weights.get("add_to_cart", 1.0)
        shopper.cols = np.concatenate([shopper.cols, model_cart])
        shopper.vals = np.concatenate([shopper.vals, np.full(len(model_cart), weight, np.float32)])
        shopper.recent = shopper.recent + [
            OnlineEvent(str(live.model.data.item_ids[i]), "add_to_cart", weight, 0, -1)
            for i in model_cart.tolist()
        ]
        shopper.personal = True  # the cart itself, even without consent to use the past
        shopper.actions.update(dict.fromkeys(in_cart.tolist(), "added to your cart"))
        segments.append(gen.personal(live, shopper, n, exclude_seen=True, metrics=state.metrics))
        shopper.history = np.concatenate([in_cart, shopper.history])
    segments += [gen.trending(live), gen.popular(live)]
    return _finish(state, live, placement, k, n, shopper, segments, ask, in_cart)


def _cart_segment(live: Live, cart_items: np.ndarray, n: int) -> gen.Segment | None:
    fbt = live.model.fbt
    if fbt is None or not len(cart_items):
        return None
    ones = np.ones(len(cart_items), np.float32)
    scores = fbt.score(history_row(fbt.n_items, cart_items, ones))[0]
    scores[cart_items] = -np.inf
    items, scores = best_of(scores, n)
    if not len(items):
        return None
    found = fbt.contributions(cart_items, ones, items)
    anchors = {}
    if found is not None:
        best = cart_items[np.argmax(found, axis=1)]
        anchors = dict(zip(items.tolist(), best.tolist(), strict=True))
    return gen.Segment(items, scores, "cart", anchors)


def rerank(state: ServingState, live: Live, item_ids: list[str], ask: Ask) -> dict[str, Any]:
    """The caller's items by this shopper's model scores; items the model cannot score
    keep their order after the scored ones."""
    shopper = state.shopper(live, ask.user_id, ask.session_id)
    index, n_model = live.catalog.index, live.model.n_items
    positions = [index.get(i, -1) for i in item_ids]
    scorable = [p for p in positions if 0 <= p < n_model]
    scores: dict[int, float] = {}
    if shopper.personal and shopper.has_history and scorable:
        values = live.model.model.pool_scores(shopper.cols, shopper.vals, np.asarray(scorable))
        scores = {
            p: float(v) for p, v in zip(scorable, values.tolist(), strict=True) if np.isfinite(v)
        }
    order = sorted(
        range(len(item_ids)),
        key=lambda i: (positions[i] not in scores, -scores.get(positions[i], 0.0), i),
    )
    cands = Candidates(
        np.asarray([positions[i] for i in order if positions[i] in scores], np.int64),
        np.zeros(len(scores)),
        _nones(len(scores)),
        np.full(len(scores), "personal", dtype=object),
    )
    reasons = explain(live, cands, shopper, {}, {}) if len(scores) else []
    scaled = dict(zip(scores, _min_max(np.asarray(list(scores.values()))).tolist(), strict=True))
    items = []
    for position, i in enumerate(order):
        at = positions[i]
        known = at in scores
        items.append(
            {
                "item_id": item_ids[i],
                "score": scaled[at] if known else None,
                "title": _title(live, at) if at >= 0 else None,
                "reason": reasons[position] if known else None,
                "position": position + 1,
            }
        )
    return _body(live, "rerank", items, shopper.user_id)


def trending(state: ServingState, live: Live, ask: Ask) -> dict[str, Any]:
    placement = placement_of(live, ask.placement, "trending")
    k = ask.k or placement.k
    n = max(placement.candidates, k)
    segments = [gen.trending(live, ask.category)]
    if ask.category:
        segments.append(gen.category_bestsellers(live, ask.category))
    else:
        segments.append(gen.popular(live))
    shopper = Shopper(ask.user_id, ask.session_id, False, None)
    return _finish(state, live, placement, k, n, shopper, segments, ask)


def buy_again(state: ServingState, live: Live, ask: Ask) -> dict[str, Any]:
    """What the user bought before, by how often and how lately; available items only."""
    placement = placement_of(live, ask.placement, "buy_again")
    k = ask.k or placement.k
    shopper = state.shopper(live, ask.user_id, None)
    if not shopper.personal or not shopper.purchased_at:
        return _respond(state, live, placement, _empty(), shopper, {}, {})
    items = np.fromiter(shopper.purchased_at.keys(), np.int64, len(shopper.purchased_at))
    last = np.fromiter(shopper.purchased_at.values(), np.float64, len(items))
    counts = np.asarray([shopper.purchase_counts.get(i, 1.0) for i in items.tolist()])
    age_days = np.maximum(time.time() * 1000 - last, 0) / DAY_MS
    scores = counts * 0.5 ** (age_days / BUY_AGAIN_HALF_LIFE_DAYS)
    # ties (same count, same age) go to the more recent purchase
    order = np.lexsort((-last, -scores))
    segment = gen.Segment(items[order], scores[order], "buy_again")
    merged = gen.merge(live, [segment], max(k, len(items)))
    merged.cands.reasons = np.asarray(
        [_bought(shopper.purchase_counts.get(i, 1.0)) for i in merged.cands.items.tolist()]
        + [None],
        dtype=object,
    )[:-1]
    ctx = _context(
        ask, shopper, k, repeats=not state.settings.training.excludes_seen(live.model.meta)
    )
    out = apply_rules(list(placement.rules), ctx, merged.cands, live.catalog)
    return _respond(state, live, placement, out, shopper, {}, {})


# -- shared steps ---------------------------------------------------------------------------
def _finish(
    state: ServingState,
    live: Live,
    placement: Placement,
    k: int,
    n: int,
    shopper: Shopper,
    segments: list[gen.Segment | None],
    ask: Ask,
    exclude_items: np.ndarray | None = None,
) -> dict[str, Any]:
    excludes_seen = state.settings.training.excludes_seen(live.model.meta)
    exclude = shopper.cols if excludes_seen else np.zeros(0, np.int64)
    if exclude_items is not None and len(exclude_items):
        exclude = np.concatenate([exclude, exclude_items])
    merged = gen.merge(live, segments, n, exclude)
    merged = gen.insert_new_arrival(live, merged, k)
    ctx = _context(
        ask, shopper, k, repeats=not state.settings.training.excludes_seen(live.model.meta)
    )
    out = apply_rules(list(placement.rules), ctx, merged.cands, live.catalog)
    return _respond(state, live, placement, out, shopper, merged.anchors, merged.labels)


def _context(ask: Ask, shopper: Shopper, k: int, repeats: bool) -> RequestContext:
    context = dict(ask.context)
    if ask.category:
        context["category"] = ask.category
    return RequestContext(
        user_id=ask.user_id,
        now_ms=time.time() * 1000.0,
        k=k,
        purchased_at=shopper.purchased_at,
        history=shopper.history,
        context=context,
        repeats=repeats,
    )


def _respond(
    state: ServingState,
    live: Live,
    placement: Placement,
    out: Candidates,
    shopper: Shopper,
    anchors: dict[int, int],
    labels: dict[int, str],
) -> dict[str, Any]:
    reasons = explain(live, out, shopper, anchors, labels)
    ids, titles = live.catalog.item_ids, live.catalog.title
    scores = list_scores(out.scores).tolist()
    items = [
        {
            "item_id": ids[item],
            "score": score,
            "title": titles[item],
            "reason": reason,
            "position": position,
        }
        for position, (item, score, reason) in enumerate(
            zip(out.items.tolist(), scores, reasons, strict=True), start=1
        )
    ]
    return _body(live, placement.name, items, shopper.user_id)


def list_scores(scores: np.ndarray) -> np.ndarray:
    """The scale every list is answered in: [0, 1], the first item at most 1 and none above
    the one before it. Lists are merged in [0, 1] bands; a boost may lift a score past 1 and
    a promotion or diversity may place an item above a better-scored one, so the list is
    divided by its best score when that exceeds 1 and each item takes at most the score of
    the item above it."""
    values = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    if not len(values):
        return values
    values = values / max(1.0, float(values.max()))
    return np.round(np.minimum.accumulate(np.clip(values, 0.0, 1.0)), 6)


def _min_max(scores: np.ndarray) -> np.ndarray:
    """Raw model scores of the caller's items on [0, 1]: the best 1, the least 0."""
    if not len(scores):
        return scores
    low, high = float(scores.min()), float(scores.max())
    if high <= low:
        return np.ones(len(scores))
    return np.round((scores - low) / (high - low), 6)


def _body(live: Live, placement: str, items: list[dict[str, Any]], user_id: str | None) -> dict:
    return {
        "recommendation_id": uuid.uuid4().hex,
        "model_version": live.model.version,
        "placement": placement,
        "user_id": user_id,
        "items": items,
    }


def _bought(count: float) -> str:
    times = int(count)
    return "you bought it before" if times <= 1 else f"you bought it {times} times"


def _item_index(live: Live, item_id: str) -> int:
    found = live.catalog.index.get(item_id)
    if found is None:
        raise NotFoundError(f"item {item_id!r} not found")
    return found


def _known(live: Live, item_ids: list[str]) -> np.ndarray:
    index = live.catalog.index
    found = [index[i] for i in dict.fromkeys(item_ids) if i in index]
    return np.asarray(found, np.int64)


def _neighbours(live: Live, item: int, n: int, kind: str) -> gen.Segment | None:
    if item >= live.model.n_items:
        # new since training: only a model's own path can say what it is like (by content)
        path = live.model.model.request_path()
        found = None
        if kind == "similar" and path is not None:
            found = path.new_item_neighbours(item, n, live.new_items)
        if found is None:
            return None
        return gen.Segment(found[0], found[1], kind, dict.fromkeys(found[0].tolist(), item))
    if kind == "similar":
        items, scores = live.model.similar(item, n)
        path = live.model.model.request_path()
        if path is not None:
            items, scores = path.similar_with_new(item, items, scores, n, live.new_items)
    else:
        items, scores = live.model.bought_together(item, n)
    return gen.Segment(items, scores, kind, dict.fromkeys(items.tolist(), item))


def _context_fallback(live: Live, item: int) -> list[gen.Segment | None]:
    category = live.catalog.category[item] or live.catalog.top_category[item]
    out: list[gen.Segment | None] = []
    if category:
        out.append(gen.category_bestsellers(live, category))
    out += [gen.trending(live), gen.popular(live)]
    return out


def _title(live: Live, item: int) -> str | None:
    return live.catalog.title[item]


def _empty() -> Candidates:
    return Candidates(np.zeros(0, np.int64), np.zeros(0), _nones(0), _nones(0))


def _nones(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out.fill(None)
    return out
