"""The data audit an analyst runs before modelling (`nextbuy stats`).

Computed from the interaction stream in one pass with per-batch aggregation, so memory grows
with the number of distinct users, items and days, not with the number of events.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nextbuy.store.base import Store

PURCHASE = "purchase"
DUPLICATE_FIELDS = (
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "timestamp",
    "value",
    "quantity",
    "order_id",
)


@dataclass
class _Accumulator:
    events_by_type: Counter[str] = field(default_factory=Counter)
    per_user: Counter[str] = field(default_factory=Counter)
    purchases_per_user: Counter[str] = field(default_factory=Counter)
    per_item: Counter[str] = field(default_factory=Counter)
    per_day: Counter[Any] = field(default_factory=Counter)
    user_first_month: dict[str, str] = field(default_factory=dict)
    row_hashes: Counter[int] = field(default_factory=Counter)
    anonymous_events: int = 0
    undated_events: int = 0
    total: int = 0
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        frame = batch.to_pandas()
        self.total += len(frame)
        self.events_by_type.update(frame["event_type"].value_counts().to_dict())
        users = frame["user_id"].dropna()
        self.anonymous_events += len(frame) - len(users)
        self.per_user.update(users.value_counts().to_dict())
        purchases = frame.loc[frame["event_type"] == PURCHASE, "user_id"].dropna()
        self.purchases_per_user.update(purchases.value_counts().to_dict())
        self.per_item.update(frame["item_id"].value_counts().to_dict())
        self._add_times(frame)
        hashes = pd.util.hash_pandas_object(frame[list(DUPLICATE_FIELDS)], index=False)
        self.row_hashes.update(hashes.value_counts().to_dict())

    def _add_times(self, frame: pd.DataFrame) -> None:
        times = frame["timestamp"]
        self.undated_events += int(times.isna().sum())
        dated = frame[times.notna()]
        if dated.empty:
            return
        low, high = dated["timestamp"].min(), dated["timestamp"].max()
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)
        self.per_day.update(dated["timestamp"].dt.floor("D").value_counts().to_dict())
        firsts = dated.dropna(subset=["user_id"]).groupby("user_id")["timestamp"].min()
        for user, when in firsts.items():
            month = when.strftime("%Y-%m")
            known = self.user_first_month.get(user)
            if known is None or month < known:
                self.user_first_month[user] = month


def _distribution(counts: Counter[str]) -> dict[str, float]:
    if not counts:
        return {}
    values = np.fromiter(counts.values(), dtype=np.int64)
    quantiles = np.quantile(values, [0.25, 0.5, 0.75, 0.9, 0.99])
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "min": int(values.min()),
        "p25": float(quantiles[0]),
        "median": float(quantiles[1]),
        "p75": float(quantiles[2]),
        "p90": float(quantiles[3]),
        "p99": float(quantiles[4]),
        "max": int(values.max()),
    }


def _long_tail_share(per_item: Counter[str], head_share: float = 0.2) -> float:
    """Share of interactions that go to items outside the most popular 20%."""
    if not per_item:
        return 0.0
    values = np.sort(np.fromiter(per_item.values(), dtype=np.int64))[::-1]
    head = max(1, round(len(values) * head_share))
    return float(values[head:].sum() / values.sum())


def _gaps(per_day: Counter[Any], first: pd.Timestamp | None, last: pd.Timestamp | None) -> dict:
    if first is None or last is None:
        return {"days_without_events": 0, "longest_gap_days": 0, "gap_ranges": []}
    days = pd.date_range(first.floor("D"), last.floor("D"), freq="D")
    empty = [d for d in days if per_day.get(d, 0) == 0]
    ranges: list[list[str]] = []
    for day in empty:
        if ranges and pd.Timestamp(ranges[-1][1]) + pd.Timedelta(days=1) == day:
            ranges[-1][1] = day.strftime("%Y-%m-%d")
        else:
            ranges.append([day.strftime("%Y-%m-%d"), day.strftime("%Y-%m-%d")])
    longest = max(((pd.Timestamp(b) - pd.Timestamp(a)).days + 1 for a, b in ranges), default=0)
    return {
        "days_in_range": len(days),
        "days_without_events": len(empty),
        "longest_gap_days": longest,
        "gap_ranges": ranges[:50],
    }


def audit(store: Store) -> dict[str, Any]:
    """Every number of the data audit, as plain JSON-ready values."""
    acc = _Accumulator()
    for batch in store.interactions():
        acc.add(batch)
    catalog = store.items()
    catalog_ids = set(catalog["item_id"]) if not catalog.empty else set()
    event_items = set(acc.per_item)
    users_total = len(acc.per_user)
    with_3_purchases = sum(1 for c in acc.purchases_per_user.values() if c >= 3)
    new_per_month = Counter(acc.user_first_month.values())
    duplicates = sum(c - 1 for c in acc.row_hashes.values() if c > 1)
    return {
        "events": acc.total,
        "events_by_type": dict(sorted(acc.events_by_type.items())),
        "users": users_total,
        "anonymous_events": acc.anonymous_events,
        "items_in_events": len(event_items),
        "catalog_items": len(catalog_ids),
        "profiles": len(store.users()),
        "first_event": acc.first.isoformat() if acc.first is not None else None,
        "last_event": acc.last.isoformat() if acc.last is not None else None,
        "undated_events": acc.undated_events,
        "gaps": _gaps(acc.per_day, acc.first, acc.last),
        "events_per_user": _distribution(acc.per_user),
        "events_per_item": _distribution(acc.per_item),
        "long_tail_share": _long_tail_share(acc.per_item),
        "users_with_3_purchases": with_3_purchases,
        "share_users_with_3_purchases": with_3_purchases / users_total if users_total else 0.0,
        "new_users_per_month": {
            month: {"new_users": count, "share_of_users": count / users_total}
            for month, count in sorted(new_per_month.items())
        },
        "duplicate_rows": duplicates,
        "items_missing_from_catalog": len(event_items - catalog_ids) if catalog_ids else None,
        "catalog_items_never_interacted": len(catalog_ids - event_items),
        "examples": {
            "items_missing_from_catalog": sorted(event_items - catalog_ids)[:10]
            if catalog_ids
            else [],
            "catalog_items_never_interacted": sorted(catalog_ids - event_items)[:10],
        },
    }
