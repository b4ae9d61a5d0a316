"""Who is asking: the trained history plus events since training, merged for one request.

The history vector the model scores is the user's trained row (weights with time decay, as
training built it) plus, for each event since the training data's last event, its event
type's weight without decay (it is the newest thing the shopper did). Anonymous visitors
have only their session's events; a logged-in user's session events count for them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nextbuy.models.requests import Ranking
from nextbuy.serving.live import Live
from nextbuy.serving.online import SESSION, USER, OnlineEvent, OnlineState
from nextbuy.serving.profiles import Profile

HISTORY_DEPTH = 50  # items of the trained history given to rules (diversity, discovery)
VERBS = {
    "purchase": "bought",
    "add_to_cart": "added to your cart",
    "wishlist": "saved",
    "rating": "rated",
}


@dataclass
class Shopper:
    user_id: str | None
    session_id: str | None
    personal: bool  # consent given and not erased since training
    profile: Profile | None
    trained: bool = False  # a trained history row exists and is used
    cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # model indices
    vals: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    recent: list[OnlineEvent] = field(default_factory=list)  # since training, oldest first
    history: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int64)
    )  # catalog, newest first
    purchased_at: dict[int, float] = field(default_factory=dict)  # catalog index -> ms
    purchase_counts: dict[int, float] = field(default_factory=dict)
    actions: dict[int, str] = field(default_factory=dict)  # catalog index -> strongest verb
    ranking: Ranking | None = None  # what the model's own path ranked, for its reasons

    @property
    def has_history(self) -> bool:
        return len(self.cols) > 0

    def verb(self, item: int) -> str:
        if item in self.purchased_at:
            return "bought"
        return self.actions.get(item, "viewed")


def resolve(
    live: Live,
    online: OnlineState,
    weights: dict[str, float],
    user_id: str | None,
    session_id: str | None,
    profile: Profile | None,
    suppressed: bool,
) -> Shopper:
    consent = profile is None or profile.consent
    shopper = Shopper(user_id, session_id, consent, profile)
    if not consent:
        return shopper  # non-personalised: nothing of theirs is read
    model = live.model
    recent = _recent(online, user_id, session_id, model.cut_ms)
    shopper.recent = recent
    trained = None if (user_id is None or suppressed) else model.trained_row(user_id)
    cols, vals = _online_vector(live, recent, weights)
    if trained is not None and len(trained[0]):
        shopper.trained = True
        cols, vals = np.concatenate([trained[0], cols]), np.concatenate([trained[1], vals])
    shopper.cols, shopper.vals = cols, vals.astype(np.float32)
    if user_id is not None and not suppressed:
        _purchases(shopper, live, user_id)
    _online_actions(shopper, live)
    shopper.history = _history(live, recent, trained)
    return shopper


def _recent(
    online: OnlineState, user_id: str | None, session_id: str | None, since_ms: int
) -> list[OnlineEvent]:
    found: list[OnlineEvent] = []
    if user_id is not None:
        found += online.events(USER + user_id, since_ms)
    if session_id is not None:
        found += online.events(SESSION + session_id, since_ms)
    if user_id is not None and session_id is not None:
        unique = {e.key: e for e in found}
        found = sorted(unique.values(), key=lambda e: e.ts_ms)
    return found


def _online_vector(
    live: Live, recent: list[OnlineEvent], weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    index = live.model.data.item_index
    cols, vals = [], []
    for event in recent:
        col = index.get(event.item_id)
        weight = weights.get(event.event_type, 0.0)
        if col is not None and weight != 0:
            cols.append(col)
            vals.append(weight)
    return np.asarray(cols, np.int64), np.asarray(vals, np.float32)


def _purchases(shopper: Shopper, live: Live, user_id: str) -> None:
    purchases = live.model.purchases
    ids, idx, counts, last = purchases.of(user_id)
    index = live.catalog.index
    if len(idx):
        # Trained items have the same index in model and catalogue; others are looked up.
        unknown = np.flatnonzero(idx < 0)
        if len(unknown):
            idx = idx.copy()
            idx[unknown] = [index.get(ids[i], -1) for i in unknown.tolist()]
        keep = idx >= 0
        shopper.purchased_at = dict(zip(idx[keep].tolist(), last[keep].tolist(), strict=True))
        shopper.purchase_counts = dict(zip(idx[keep].tolist(), counts[keep].tolist(), strict=True))
    for event in shopper.recent:
        if event.event_type != "purchase" or event.ts_ms <= purchases.watermark_ms:
            continue
        at = index.get(event.item_id)
        if at is not None:
            shopper.purchased_at[at] = max(shopper.purchased_at.get(at, 0.0), float(event.ts_ms))
            shopper.purchase_counts[at] = shopper.purchase_counts.get(at, 0.0) + 1.0


def _online_actions(shopper: Shopper, live: Live) -> None:
    index = live.catalog.index
    for event in shopper.recent:
        at = index.get(event.item_id)
        if at is None:
            continue
        if event.event_type == "purchase" and shopper.user_id is None:
            # an anonymous session's purchases still leave its recommendations
            shopper.purchased_at[at] = max(shopper.purchased_at.get(at, 0.0), float(event.ts_ms))
        verb = VERBS.get(event.event_type)
        if verb is not None and shopper.actions.get(at) != "bought":
            shopper.actions[at] = verb


def _history(
    live: Live, recent: list[OnlineEvent], trained: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """Catalog indices, most recent first: events since training, then the trained row."""
    by_weight = np.zeros(0, np.int64)
    if trained is not None and len(trained[0]):
        cols, vals = trained
        # decayed weights rank the trained items roughly by recency and strength
        by_weight = cols[np.argsort(-vals, kind="stable")[:HISTORY_DEPTH]]
    if not recent:
        return by_weight
    index = live.catalog.index
    newest = [index.get(e.item_id) for e in reversed(recent)]
    merged = np.concatenate([np.asarray([i for i in newest if i is not None], np.int64), by_weight])
    _, first = np.unique(merged, return_index=True)
    return merged[np.sort(first)]
