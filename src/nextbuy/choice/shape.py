"""What a shop's data looks like, measured where `nextbuy train` validates: the held-out window.

The shape decides what the automatic choice tries (side information needs attributes, the
hybrid needs dated events, event-weight variants need several kinds of event) and whether
lists may repeat what a customer bought before (the repeat share of the window).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.errors import DataError
from nextbuy.models.ease import item_attributes

MS_PER_DAY = 86_400_000
TEXT_COLUMNS = ("title", "description")
ATTRIBUTE_COVERAGE = 0.2  # share of the catalogue with a shared value for side information


@dataclass(frozen=True)
class DataShape:
    """Facts about the training events and the validation window that follows them."""

    events: int  # events of known users with a positive weight
    users: int
    items: int  # items in those events
    catalogue_items: int
    events_per_user: float  # median
    target: str  # the event type a list must predict ("purchase", or every positive type)
    event_types: tuple[str, ...]  # positive event types present
    # of the window's (customer, item) targets of customers seen before it, the share they
    # had bought (or rated, ...) before: what decides whether lists may repeat purchases (a
    # new customer has nothing to repeat)
    repeat_share: float
    validation_users: int
    new_user_share: float  # of the window's customers, the share never seen before it
    dated_share: float  # of the training events, the share with a time
    day_only: bool  # every time is a midnight: dates without a time of day
    attributes: bool  # catalogue values (category, brand, attributes) shared by items
    categories: bool
    texts: bool  # titles or descriptions to read
    rating_scale: tuple[float, float] | None  # lowest and highest rating value, if any

    def lines(self) -> list[str]:
        """The shape in plain words, one fact a line."""
        scale = self.rating_scale
        return [
            f"{self.events:,} events of {self.users:,} customers on {self.items:,} items "
            f"({self.catalogue_items:,} in the catalogue); median {self.events_per_user:g} "
            "events a customer",
            f"predicting: {self.target}; event types: {', '.join(self.event_types)}",
            f"held out: {self.validation_users:,} customers, {self.new_user_share:.0%} of "
            f"them new; returning ones had had {self.repeat_share:.0%} of what they bought",
            self._times(),
            "catalogue: "
            + (", ".join(self._catalogue_facts()) or "ids only (no attributes, no text)"),
            *([f"ratings from {scale[0]:g} to {scale[1]:g}"] if scale else []),
        ]

    def _times(self) -> str:
        if self.dated_share < 0.5:
            return f"times: {self.dated_share:.0%} of the events are dated"
        return "times: dates only (no time of day)" if self.day_only else "times: dated"

    def _catalogue_facts(self) -> list[str]:
        facts = []
        if self.categories:
            facts.append("categories")
        if self.attributes:
            facts.append("shared attributes")
        if self.texts:
            facts.append("titles or descriptions")
        return facts

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["event_types"] = list(self.event_types)
        out["rating_scale"] = None if self.rating_scale is None else list(self.rating_scale)
        return out


def target_events(events: pd.DataFrame, weights: Mapping[str, float]) -> list[str]:
    """What a list predicts: purchases where there are any, else every positive event type."""
    types = set(events["event_type"].dropna().astype(str).unique())
    if "purchase" in types:
        return ["purchase"]
    return sorted(t for t in types if weights.get(t, 0.0) > 0)


def measure_shape(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    items: pd.DataFrame | None,
    weights: Mapping[str, float],
) -> DataShape:
    """The shape of `train` (what models learn from) and `validation` (what they predict)."""
    positive = _positive(train, weights)
    if positive.empty:
        raise DataError("no event of a known customer with a positive weight to learn from")
    target = target_events(pd.concat([train, validation]), weights)
    future = validation[validation["event_type"].isin(target) & validation["user_id"].notna()]
    pairs = future[["user_id", "item_id"]].astype(str).drop_duplicates()
    # bought before (where purchases are the target): a viewed item bought later is a find
    had = positive[positive["event_type"].isin(target)]
    seen = pd.MultiIndex.from_frame(had[["user_id", "item_id"]].astype(str))
    known_user = pairs["user_id"].isin(positive["user_id"].astype(str).unique())
    repeats = pd.MultiIndex.from_frame(pairs).isin(seen)[known_user.to_numpy()]
    customers = pairs.drop_duplicates("user_id")
    return DataShape(
        events=len(positive),
        users=int(positive["user_id"].nunique()),
        items=int(positive["item_id"].nunique()),
        catalogue_items=0 if items is None else int(items["item_id"].nunique()),
        events_per_user=float(positive.groupby("user_id").size().median()),
        target="purchase" if target == ["purchase"] else "any positive event",
        event_types=tuple(sorted(positive["event_type"].astype(str).unique())),
        repeat_share=float(repeats.mean()) if len(repeats) else 0.0,
        validation_users=len(customers),
        new_user_share=float((~known_user[customers.index]).mean()) if len(customers) else 0.0,
        dated_share=float(train["timestamp"].notna().mean()) if len(train) else 0.0,
        day_only=_day_only(train["timestamp"]),
        attributes=_has_attributes(items),
        categories=_has_column(items, "category"),
        texts=any(_has_column(items, c) for c in TEXT_COLUMNS),
        rating_scale=_rating_scale(positive),
    )


def _positive(events: pd.DataFrame, weights: Mapping[str, float]) -> pd.DataFrame:
    weight = events["event_type"].map(weights).fillna(0)
    return events[(weight > 0) & events["user_id"].notna()]


def _day_only(times: pd.Series) -> bool:
    dated = pd.to_datetime(times.dropna(), utc=True)
    if dated.empty:
        return False
    ms = dated.dt.tz_localize(None).to_numpy(dtype="datetime64[ms]").astype(np.int64)
    return bool((ms % MS_PER_DAY == 0).all())


def _has_column(items: pd.DataFrame | None, column: str) -> bool:
    if items is None or column not in items.columns:
        return False
    values = items[column].dropna().astype(str).str.strip()
    return bool((values != "").any())


def _has_attributes(items: pd.DataFrame | None) -> bool:
    """Whether enough of the catalogue shares values (category levels, brands, attributes)
    for side information to say something."""
    if items is None or items.empty:
        return False
    ids = np.asarray(items["item_id"].astype(str).unique(), dtype=object)
    shared = item_attributes(items, ids)
    described = np.diff(shared.indptr) > 0
    return bool(described.mean() >= ATTRIBUTE_COVERAGE)


def _rating_scale(events: pd.DataFrame) -> tuple[float, float] | None:
    if "value" not in events.columns:
        return None
    values = pd.to_numeric(events.loc[events["event_type"] == "rating", "value"], errors="coerce")
    values = values.dropna()
    if values.nunique() < 2:
        return None
    return float(values.min()), float(values.max())
