"""Explore: one customer's history and lists per placement; one item's neighbours.

Everything comes from the serving state in memory (the trained history, purchases and the
events since training), never from a scan of the events table, and the lists are computed
by the very functions the API routes call, with their reasons. They bypass the experiment
layer on purpose: a preview is neither an exposure nor part of any test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from nextbuy.errors import NotFoundError
from nextbuy.serving import recommend
from nextbuy.serving.live import Live
from nextbuy.serving.recommend import Ask

if TYPE_CHECKING:
    from nextbuy.serving.state import ServingState

HISTORY_ITEMS = 20
SUGGESTIONS = 20


def _iso(ms: float | None) -> str | None:
    if ms is None or not np.isfinite(ms) or ms <= 0:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _item(live: Live, index: int) -> dict[str, Any]:
    catalog = live.catalog
    price = float(catalog.price[index])
    return {
        "item_id": str(catalog.item_ids[index]),
        "title": catalog.title[index],
        "category": catalog.category[index],
        "price": price if np.isfinite(price) else None,
    }


# -- search ----------------------------------------------------------------------------------
def search_users(live: Live, query: str, limit: int = SUGGESTIONS) -> list[dict[str, Any]]:
    """Trained customers whose id starts with `query`, the most active first."""
    data = live.model.data
    sizes = np.diff(data.matrix.indptr)
    text = query.strip()
    if text:
        rows = [row for user, row in data.user_index.items() if str(user).startswith(text)]
        rows_array = np.asarray(rows, np.int64)
    else:
        rows_array = np.arange(len(sizes))
    best = rows_array[np.argsort(-sizes[rows_array], kind="stable")[:limit]]
    return [{"user_id": str(data.user_ids[r]), "items": int(sizes[r])} for r in best.tolist()]


def search_items(live: Live, query: str, limit: int = SUGGESTIONS) -> list[dict[str, Any]]:
    """Items whose id or title contains `query`, the most popular first."""
    catalog = live.catalog
    text = query.strip().casefold()
    popularity = live.popularity
    if text:
        found = [
            i
            for i, (item, title) in enumerate(zip(catalog.item_ids, catalog.title, strict=True))
            if text in str(item).casefold() or (title and text in str(title).casefold())
        ]
        candidates = np.asarray(found, np.int64)
    else:
        candidates = np.arange(len(catalog))
    best = candidates[np.argsort(-popularity[candidates], kind="stable")[:limit]]
    return [_item(live, i) for i in best.tolist()]


# -- a customer ------------------------------------------------------------------------------
def user_view(state: ServingState, live: Live, user_id: str) -> dict[str, Any]:
    """History (trained, purchases, since training) and the lists of every placement."""
    shopper = state.shopper(live, user_id, None)
    trained = live.model.trained_row(user_id)
    strongest: list[dict[str, Any]] = []
    if trained is not None and len(trained[0]):
        cols, vals = trained
        order = np.argsort(-vals, kind="stable")[:HISTORY_ITEMS]
        strongest = [{**_item(live, int(cols[i])), "weight": float(vals[i])} for i in order]
    purchases = sorted(shopper.purchased_at.items(), key=lambda kv: -kv[1])[:HISTORY_ITEMS]
    index, titles = live.catalog.index, live.catalog.title
    recent = [
        {
            "item_id": e.item_id,
            "title": titles[index[e.item_id]] if e.item_id in index else None,
            "event_type": e.event_type,
            "at": _iso(e.ts_ms),
        }
        for e in reversed(shopper.recent[-HISTORY_ITEMS:])
    ]
    return {
        "user_id": user_id,
        "known": trained is not None,
        "consent": shopper.personal,
        "history": strongest,
        "purchases": [
            {
                **_item(live, item),
                "times": int(shopper.purchase_counts.get(item, 1)),
                "last": _iso(at),
            }
            for item, at in purchases
        ],
        "since_training": recent,
        "placements": _user_lists(state, live, user_id),
    }


# Placements with a route of their own; every other placement is a for-you list.
ITEM_PLACEMENTS = frozenset({"product_page", "cart", "trending", "buy_again"})


def _user_lists(state: ServingState, live: Live, user_id: str) -> list[dict[str, Any]]:
    """Each placement as the storefront would ask for it: for-you lists on home and the
    other personal placements, buy-again, and the product page and cart of the item the
    customer touched last."""
    names = ["home", *sorted(set(live.placements) - {"home"} - ITEM_PLACEMENTS)]
    lists = []
    for name in names:
        placement = name if name in live.placements else None
        body = recommend.for_user(state, live, Ask(user_id=user_id, placement=placement))
        lists.append(_list(name, "for_user", body))
    body = recommend.buy_again(state, live, Ask(user_id=user_id))
    lists.append(_list(body["placement"], "buy_again", body))
    latest = _latest_item(state, live, user_id)
    if latest is not None and latest in live.catalog.index:
        body = recommend.similar(state, live, latest, Ask(user_id=user_id))
        lists.append(_list(body["placement"], f"similar to {latest}", body))
        body = recommend.cart(state, live, [latest], Ask(user_id=user_id))
        lists.append(_list(body["placement"], f"cart holding {latest}", body))
    return lists


def _latest_item(state: ServingState, live: Live, user_id: str) -> str | None:
    """The item of the customer's newest event, else of their newest purchase."""
    shopper = state.shopper(live, user_id, None)
    if shopper.recent:
        return shopper.recent[-1].item_id
    if shopper.purchased_at:
        newest = max(shopper.purchased_at.items(), key=lambda kv: kv[1])[0]
        return str(live.catalog.item_ids[newest])
    return None


def _list(name: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"placement": name, "route": route, "items": body["items"]}


# -- an item ---------------------------------------------------------------------------------
def item_view(state: ServingState, live: Live, item_id: str) -> dict[str, Any]:
    """The item, its similar items and what is bought with it, with reasons."""
    index = live.catalog.index.get(item_id)
    if index is None:
        raise NotFoundError(f"item {item_id!r} not found")
    popularity = live.popularity
    rank = int((popularity > popularity[index]).sum()) + 1
    similar = recommend.similar(state, live, item_id, Ask())
    together = recommend.bought_together(state, live, item_id, Ask())
    return {
        "item": {
            **_item(live, index),
            "available": bool(live.catalog.available[index]),
            "popularity_rank": rank,
            "in_model": index < live.model.n_items,
        },
        "lists": [
            _list(similar["placement"], "similar", similar),
            _list(together["placement"], "bought_together", together),
        ],
    }
