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
and revenue (the purchases' ``value``). The rows are read from the store
(``nextbuy.store.outcomes``), so it works without a running server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.experiments.analysis import COUNT_COLUMNS
from nextbuy.store.outcomes import open_outcome_reader

HOUR_MS = 3_600_000
OUTCOME_TYPES = ("click", "add_to_cart", "purchase")
COUNT_OF_TYPE = {"click": "clicks", "add_to_cart": "add_to_carts"}


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
    read = open_outcome_reader(store_path).experiment_outcomes(experiment, window_ms)
    lists, direct, late = read.lists, read.direct, read.view_through
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
    return open_outcome_reader(store_path).bandit_counts(experiment, outcome)
