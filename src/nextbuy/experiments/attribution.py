"""Attribution: which clicks, carts and purchases each served list led to.

Two ways an outcome is tied to a list (the exposure log, ``nextbuy.serving.exposures``):

- **direct**: the event carries the list's ``recommendation_id`` (the storefront sends it
  back with the click, add-to-cart or purchase that followed from the list);
- **view-through**: a purchase without a matching ``recommendation_id`` of an item that was
  shown to the same user at most ``view_through_hours`` earlier. It goes to the latest such
  list, so one purchase counts once. Only logged-in users can be matched this way (a
  purchase names its user, not the visitor's earlier anonymous session).

The results feed ``analysis.analyse``: one row per randomisation unit and variant with its
impressions (lists shown), clicks, add-to-carts, orders (distinct order ids, else events)
and revenue (the purchases' ``value``). Everything is read with plain SQL from the store's
SQLite file, so it works without a running server.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.experiments.analysis import COUNT_COLUMNS

HOUR_MS = 3_600_000
OUTCOME_TYPES = ("click", "add_to_cart", "purchase")
COUNT_OF_TYPE = {"click": "clicks", "add_to_cart": "add_to_carts"}

LISTS_SQL = """
SELECT a.recommendation_id, a.variant, a.unit_id, a.user_id, a.served_at, x.placement
FROM exposure_arms a JOIN exposures x ON x.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 1
"""
DIRECT_SQL = """
SELECT a.recommendation_id, a.variant, a.unit_id, e.event_key, e.event_type, e.ts, e.value,
       e.order_id, e.item_id
FROM exposure_arms a JOIN events e ON e.recommendation_id = a.recommendation_id
WHERE a.experiment = ? AND a.shown = 1 AND e.event_type IN ('click', 'add_to_cart', 'purchase')
"""
# Purchases of a shown item by the same user inside the window, not already direct for this
# experiment; every candidate list is returned and the latest is kept in pandas.
VIEW_THROUGH_SQL = """
SELECT a.recommendation_id, a.variant, a.unit_id, e.event_key, e.ts, e.value, e.order_id,
       e.item_id, a.served_at
FROM events e
JOIN exposure_items i ON i.user_id = e.user_id AND i.item_id = e.item_id
JOIN exposure_arms a ON a.experiment = ? AND a.recommendation_id = i.recommendation_id
WHERE e.event_type = 'purchase' AND e.user_id IS NOT NULL AND a.shown = 1
  AND e.ts >= a.served_at AND e.ts <= a.served_at + ?
  AND (e.recommendation_id IS NULL OR e.recommendation_id NOT IN
       (SELECT recommendation_id FROM exposure_arms WHERE experiment = ? AND shown = 1))
"""


@contextmanager
def connect(store_path: Path) -> Iterator[sqlite3.Connection]:
    """A read connection to the store's file (a snapshot while writers keep appending)."""
    with closing(sqlite3.connect(Path(store_path), timeout=30)) as conn:
        yield conn


def query(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> pd.DataFrame:
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return pd.DataFrame.from_records(cursor.fetchall(), columns=names)


@dataclass(frozen=True)
class Attribution:
    """One experiment's shown lists and the outcomes attributed to them.

    ``lists``: recommendation_id, variant, unit_id, user_id, served_at, placement.
    ``events``: recommendation_id, variant, unit_id, event_key, event_type, ts, value,
    order_key, item_id, how ("direct" or "view_through").
    """

    lists: pd.DataFrame
    events: pd.DataFrame
    view_through_hours: float

    def until(self, cut_ms: float) -> Attribution:
        """What was known at ``cut_ms``: lists served and outcomes that happened by then."""
        return Attribution(
            self.lists[self.lists["served_at"] <= cut_ms],
            self.events[self.events["ts"] <= cut_ms],
            self.view_through_hours,
        )

    def per_unit(self) -> pd.DataFrame:
        """Rows for ``analyse``: variant, unit_id, user_id, impressions, clicks, add_to_carts,
        orders, revenue, first_exposure_ms."""
        return per_unit(self)


def attribute(store_path: Path, experiment: str, view_through_hours: float = 24.0) -> Attribution:
    """Shown lists of ``experiment`` and their direct and view-through outcomes."""
    window_ms = int(view_through_hours * HOUR_MS)
    with connect(store_path) as conn:
        lists = query(conn, LISTS_SQL, (experiment,))
        direct = query(conn, DIRECT_SQL, (experiment,))
        late = (
            query(conn, VIEW_THROUGH_SQL, (experiment, window_ms, experiment))
            if window_ms > 0
            else pd.DataFrame(columns=[*direct.columns.drop("event_type"), "served_at"])
        )
    direct["how"] = "direct"
    if len(late):
        # the latest list shown before the purchase gets it
        late = late.sort_values(["event_key", "served_at"]).drop_duplicates(
            "event_key", keep="last"
        )
    late = late.drop(columns="served_at").assign(event_type="purchase", how="view_through")
    events = pd.concat([direct, late[direct.columns]], ignore_index=True)
    events["order_key"] = events["order_id"].where(
        events["order_id"].notna(), "event:" + events["event_key"].astype(str)
    )
    return Attribution(lists, events.drop(columns="order_id"), view_through_hours)


def per_unit(data: Attribution) -> pd.DataFrame:
    lists, events = data.lists, data.events
    keys = ["variant", "unit_id"]
    base = lists.groupby(keys, sort=False).agg(
        user_id=("user_id", "first"),
        impressions=("recommendation_id", "size"),
        first_exposure_ms=("served_at", "min"),
    )
    for event_type, column in COUNT_OF_TYPE.items():
        base[column] = events[events["event_type"] == event_type].groupby(keys).size()
    bought = events[events["event_type"] == "purchase"]
    base["orders"] = bought.groupby(keys)["order_key"].nunique()
    base["revenue"] = bought.groupby(keys)["value"].sum(min_count=1)
    counts = list(COUNT_COLUMNS)
    base[counts] = base[counts].fillna(0.0).astype(np.float64)
    return base.reset_index()[[*keys, "user_id", *counts, "first_exposure_ms"]]


def unit_outcomes(
    store_path: Path, experiment: str, view_through_hours: float = 24.0
) -> pd.DataFrame:
    """Per unit and variant totals of ``experiment``, ready for ``analysis.analyse``."""
    return attribute(store_path, experiment, view_through_hours).per_unit()


def bandit_counts(
    store_path: Path, experiment: str, metric: str = "ctr"
) -> tuple[dict[str, float], dict[str, float]]:
    """(successes, trials) per variant for Thompson sampling: trials are shown lists, a
    success a list followed by a click (``ctr``) or a purchase (``conversion``) sent with its
    id. Per list rather than per event, so successes never exceed trials."""
    outcome = "click" if metric == "ctr" else "purchase"
    with connect(store_path) as conn:
        trials = dict(
            conn.execute(
                "SELECT variant, COUNT(*) FROM exposure_arms WHERE experiment = ? AND shown = 1 "
                "GROUP BY variant",
                (experiment,),
            ).fetchall()
        )
        successes = dict(
            conn.execute(
                "SELECT a.variant, COUNT(DISTINCT a.recommendation_id) FROM exposure_arms a "
                "JOIN events e ON e.recommendation_id = a.recommendation_id "
                "WHERE a.experiment = ? AND a.shown = 1 AND e.event_type = ? GROUP BY a.variant",
                (experiment, outcome),
            ).fetchall()
        )
    return (
        {k: float(v) for k, v in successes.items()},
        {k: float(v) for k, v in trials.items()},
    )
