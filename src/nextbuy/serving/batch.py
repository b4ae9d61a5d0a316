"""Batch lists (`nextbuy recommend`) through the request path the API serves.

A batch is the API answered for many customers at once, in-process: the same serving state
(the version in service, events since training, the catalogue with its availability, the
customers' consent, the erasures) and the same placement rules, so a personalised e-mail never
carries a list the shop's own API would refuse to show. Experiments are the API's alone: a
batch is what the version in service gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from nextbuy.config import Settings
from nextbuy.errors import NextbuyError
from nextbuy.serving.live import Live, Placement
from nextbuy.serving.recommend import Ask, for_user
from nextbuy.serving.state import ServingState

BATCH_COLUMNS: tuple[str, ...] = ("user_id", "rank", "item_id", "score", "title", "reason")
# Without a placement a batch lists in the model's own order (no page's diversity or boosts),
# as exports and offline scoring want it; a shop may configure its own "ranked" placement.
RANKED = Placement("ranked", 10, 200)
Advance = Callable[[int, int], None]  # (done, total)


def _quiet(done: int, total: int) -> None:
    pass


def batch_lists(
    settings: Settings,
    user_ids: Sequence[str] | None,
    k: int | None = None,
    placement: str | None = None,
    new_only: bool | None = None,
    advance: Advance = _quiet,
) -> pd.DataFrame:
    """One row per listed item (user_id, rank, item_id, score, title, reason), for the given
    customers or (None) every customer the version knows who is not erased.

    `placement` names the rules applied (none when None: the model's order, still without
    unavailable items); `new_only` overrides whether lists may repeat purchases (the
    version's decision when None).
    """
    if new_only is not None:
        training = settings.training.model_copy(update={"exclude_seen": new_only})
        settings = settings.model_copy(update={"training": training})
    state = ServingState(settings)
    try:
        live = _serving(state)
        if placement is None and RANKED.name not in live.placements:
            live = replace(live, placements={**live.placements, RANKED.name: RANKED})
        users = list(user_ids) if user_ids is not None else _everyone(state, live)
        rows: list[dict[str, Any]] = []
        ask = Ask(k=k, placement=placement or RANKED.name)
        for done, user in enumerate(users, start=1):
            body = for_user(state, live, replace(ask, user_id=user))
            rows += [_row(user, item) for item in body["items"]]
            advance(done, len(users))
        return pd.DataFrame(rows, columns=list(BATCH_COLUMNS))
    finally:
        state.stop()


def _serving(state: ServingState) -> Live:
    state.check_model()
    if state.live is not None:
        return state.live
    if state.last_load_error is None:
        raise NextbuyError("no trained model yet: run `nextbuy train` first")
    raise NextbuyError(f"the version in service did not load: {state.last_load_error}")


def _everyone(state: ServingState, live: Live) -> list[str]:
    """Trained customers, then those first seen since training; erased ones left out."""
    known = dict.fromkeys(str(u) for u in live.model.data.user_ids)
    known.update(dict.fromkeys(state.online.user_ids()))
    trained_at = live.model.trained_at_ms
    return [u for u in known if not state.erasures.suppressed(u, trained_at)]


def _row(user: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": user,
        "rank": item["position"],
        "item_id": item["item_id"],
        "score": item["score"],
        "title": item["title"],
        "reason": item["reason"],
    }
