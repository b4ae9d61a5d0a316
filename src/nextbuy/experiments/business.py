"""Business metrics of the served lists: impressions and what followed them (clicks,
add-to-carts, purchases, revenue), overall or grouped by placement, position, day, ..."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.errors import DataError
from nextbuy.store.outcomes import SERVED_GROUPS, open_outcome_reader


def business_metrics(
    store_path: Path,
    since: Any = None,
    until: Any = None,
    by: Sequence[str] = ("placement", "position"),
) -> pd.DataFrame:
    """Shown lists' item impressions and what followed directly (events sent with the
    list's recommendation_id on one of its items), grouped ``by`` any of placement, route,
    model_version, position, day, hour: impressions, lists, clicks, add_to_carts,
    purchases, revenue, ctr, add_to_cart_rate, purchase_rate, revenue_per_impression.
    ``since``/``until``: datetimes, ISO strings or unix milliseconds."""
    unknown = [b for b in by if b not in SERVED_GROUPS]
    if unknown:
        choices = ", ".join(SERVED_GROUPS)
        raise DataError(f"cannot group by {', '.join(unknown)}; choose from {choices}")
    shown, outcomes = open_outcome_reader(store_path).served_performance(
        by,
        None if since is None else _millis(since),
        None if until is None else _millis(until),
    )
    counts = ["clicks", "add_to_carts", "purchases", "revenue"]
    frame = shown.merge(outcomes, on=list(by), how="left") if by else shown.join(outcomes)
    frame[counts] = frame[counts].fillna(0.0).astype(np.float64)
    impressions = frame["impressions"].replace(0, np.nan)
    frame["ctr"] = frame["clicks"] / impressions
    frame["add_to_cart_rate"] = frame["add_to_carts"] / impressions
    frame["purchase_rate"] = frame["purchases"] / impressions
    frame["revenue_per_impression"] = frame["revenue"] / impressions
    return frame.sort_values(list(by)).reset_index(drop=True) if by else frame


def _millis(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value // 1_000_000)
