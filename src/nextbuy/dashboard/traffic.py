"""A short simulated traffic run, so a fresh project's dashboard has live data to show.

Customers with a history ask for their home-page and e-mail lists under a small experiment
(the personal list against a trending-only holdout); some click an item, some of those add
it to the cart, some buy it, each event sent back with the list's recommendation_id and
marked ``{"simulated": true}`` in its context. A few new visitors get cold-start lists.
`nextbuy demo` runs it once the server answers; the dashboard tests run it too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import httpx

log = logging.getLogger("nextbuy.dashboard")

EXPERIMENT = {
    "name": "home-holdout",
    "layer": "home",
    "status": "running",
    "variants": [{"name": "control"}, {"name": "trending-only", "holdout": True}],
}
SIMULATED = {"simulated": True}


def simulate_traffic(client: httpx.Client, users: list[str], seed: int = 0) -> dict[str, int]:
    """A short traffic run through `client` (an admin key in its headers): an experiment,
    then visits that each ask for a list and sometimes click, add to the cart and buy one of
    its items, sending the list's recommendation_id with each event. Returns what was sent."""
    rng = random.Random(seed)
    sent = {"lists": 0, "click": 0, "add_to_cart": 0, "purchase": 0, "unknown": 0, "revenue": 0}
    created = client.post("/v1/admin/experiments", json=EXPERIMENT)
    if created.status_code != 409:  # a project run before already has it
        created.raise_for_status()
    for visit in range(3 * len(users)):
        user = users[visit % len(users)]
        placement = "email" if visit % 4 == 3 else "home"
        body = _get(client, f"/v1/users/{user}/recommendations", {"placement": placement})
        sent["lists"] += 1
        _react(client, rng, user, body, sent)
    for n in range(10):  # new visitors: cold-start answers
        _get(client, f"/v1/users/new-visitor-{n}/recommendations", {})
        sent["unknown"] += 1
    item = body["items"][0]["item_id"]
    for route in ("similar", "bought-together"):
        rec = _get(client, f"/v1/items/{item}/{route}", {"user_id": users[0]})
        sent["lists"] += 1
        _react(client, rng, users[0], rec, sent)
    return sent


def _get(client: httpx.Client, path: str, params: dict[str, str]) -> dict[str, Any]:
    response = client.get(path, params=params)
    response.raise_for_status()
    return response.json()


def _react(
    client: httpx.Client, rng: random.Random, user: str, body: dict[str, Any], sent: dict
) -> None:
    if not body["items"] or rng.random() > 0.6:
        return
    # earlier positions are clicked more, as on a real page
    position = min(int(rng.expovariate(0.5)), len(body["items"]) - 1)
    item = body["items"][position]["item_id"]
    events = [_event(user, item, "click", body["recommendation_id"])]
    if rng.random() < 0.5:
        events.append(_event(user, item, "add_to_cart", body["recommendation_id"]))
        if rng.random() < 0.6:
            bought = _event(user, item, "purchase", body["recommendation_id"])
            bought.update(value=round(rng.uniform(2, 40), 2), quantity=1)
            events.append(bought)
    client.post("/v1/events", json={"events": events}).raise_for_status()
    for event in events:
        sent[event["event_type"]] += 1
        sent["revenue"] += event.get("value", 0)


def _event(user: str, item: str, kind: str, recommendation_id: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "item_id": item,
        "event_type": kind,
        "recommendation_id": recommendation_id,
        "context": SIMULATED,
    }


def run_in_background(url: str, visitors: int = 20, wait_seconds: float = 600) -> None:
    """Once the server at `url` is ready, one traffic run for its most active customers
    (a daemon thread; the server's log says when it is done)."""

    def run() -> None:
        deadline = time.monotonic() + wait_seconds
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            try:
                found = client.get("/v1/dashboard/explore/search").json()["users"]
                sent = simulate_traffic(client, [u["user_id"] for u in found][:visitors])
                # Its results stay on the dashboard, but a newcomer trying the API should get
                # personal lists, not land in the trending-only holdout.
                client.post(f"/v1/admin/experiments/{EXPERIMENT['name']}/stop")
                client.post("/v1/dashboard/refresh")
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                log.warning("simulated traffic stopped: %s", exc)
                return
        log.info(
            "simulated traffic: %d lists, %d clicks, %d purchases; see %s/dashboard",
            sent["lists"] + sent["unknown"],
            sent["click"],
            sent["purchase"],
            url,
        )

    threading.Thread(target=run, name="nextbuy-demo-traffic", daemon=True).start()
