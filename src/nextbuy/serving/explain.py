"""Reasons for the final k items only ("because you bought X", "popular in Garden", ...).

A personal recommendation is explained by the history item that adds most to its score
(exact for EASE, item kNN and fbt; the most similar item by factors for ALS/BPR), looked
for among the shopper's most recent history items. A reason a rule already set (promoted,
new arrival, discovery) is kept.
"""

from __future__ import annotations

import numpy as np

from nextbuy.rules import Candidates
from nextbuy.serving.live import Live
from nextbuy.serving.shopper import Shopper

EXPLAIN_DEPTH = 30  # most recent history items considered as the reason


def title_of(live: Live, item: int) -> str:
    title = live.catalog.title[item]
    return str(title) if title else str(live.catalog.item_ids[item])


def explain(
    live: Live,
    cands: Candidates,
    shopper: Shopper | None,
    anchors: dict[int, int],
    labels: dict[int, str],
) -> list[str]:
    reasons: list[str | None] = list(cands.reasons)
    items = cands.items.tolist()
    origins = list(cands.origin)
    personal = [
        i
        for i, (r, o) in enumerate(zip(reasons, origins, strict=True))
        if r is None and o == "personal"
    ]
    if personal and shopper is not None:
        found = _own_reasons(live, shopper, [items[i] for i in personal])
        for i in personal:
            reasons[i] = found.get(items[i])
        personal = [i for i in personal if reasons[i] is None]
    if personal and shopper is not None:
        for i, anchor in _personal_anchors(live, shopper, [items[i] for i in personal]):
            verb = shopper.verb(anchor)
            reasons[personal[i]] = f"because you {verb} {title_of(live, anchor)}"
    for i, (reason, origin) in enumerate(zip(reasons, origins, strict=True)):
        if reason is None:
            reasons[i] = _by_origin(live, items[i], origin, anchors, labels)
    return [r or "recommended for you" for r in reasons]


def _own_reasons(live: Live, shopper: Shopper, items: list[int]) -> dict[int, str]:
    """The reasons of a model with its own request path (its ranker's strongest signal)."""
    path = live.model.model.request_path()
    if path is None:
        return {}
    return path.reasons(shopper, items, shopper.ranking, live.catalog, live.new_items)


def _personal_anchors(live: Live, shopper: Shopper, targets: list[int]) -> list[tuple[int, int]]:
    """(position in targets, history catalogue index) for each explainable target."""
    n_model = live.model.n_items
    hist = shopper.history[shopper.history < n_model][:EXPLAIN_DEPTH]
    if not len(hist):
        return []
    weights = np.ones(len(hist), np.float32)
    model_targets = np.asarray(targets, np.int64)
    inside = np.flatnonzero(model_targets < n_model)
    found = live.model.contributions(hist, weights, model_targets[inside])
    if found is None:
        return []
    best = np.argmax(found, axis=1)
    strength = found[np.arange(len(inside)), best]
    return [
        (int(t), int(hist[b]))
        for t, b, s in zip(inside.tolist(), best.tolist(), strength.tolist(), strict=True)
        if s > 0
    ]


def _by_origin(
    live: Live, item: int, origin: str, anchors: dict[int, int], labels: dict[int, str]
) -> str:
    anchor = anchors.get(item)
    category = live.catalog.category[item] or live.catalog.top_category[item]
    if origin == "complement" and anchor is not None:
        return f"goes with {title_of(live, anchor)}"
    if origin == "bought_together" and anchor is not None:
        return f"bought together with {title_of(live, anchor)}"
    if origin == "similar" and anchor is not None:
        return f"similar to {title_of(live, anchor)}"
    if origin == "cart" and anchor is not None:
        return f"goes with {title_of(live, anchor)} in your cart"
    if origin in ("category", "onboarding"):
        label = labels.get(item) or category
        return f"popular in {label}" if label else "popular"
    if origin == "trending":
        label = labels.get(item)
        return f"trending in {label}" if label else "trending"
    if origin == "popular":
        return f"popular in {category}" if category else "popular"
    if origin == "new":
        return "new arrival"
    if origin == "buy_again":
        return "buy it again"
    if origin == "promoted":
        return "promoted"
    return "recommended for you"
