"""The Store interface every backend implements; callers never see SQL or a driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

import pandas as pd
import pyarrow as pa

from nextbuy.data.schema import ITEM_COLUMNS

# The catalogue columns the server reads when it loads a model: all but the long free-form ones.
SERVING_ITEM_COLUMNS: tuple[str, ...] = tuple(
    c for c in ITEM_COLUMNS if c not in ("description", "attributes")
)

# Arrow schema of the interaction stream that training reads.
INTERACTION_ARROW_SCHEMA = pa.schema(
    [
        ("event_key", pa.int64()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("event_type", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("value", pa.float64()),
        ("quantity", pa.float64()),
        ("session_id", pa.string()),
        ("order_id", pa.string()),
        ("recommendation_id", pa.string()),
        ("context", pa.string()),
        ("event_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class AppendResult:
    stored: int
    duplicates: int


@dataclass
class ErasureReport:
    user_id: str
    rows_deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows_deleted.values())


@runtime_checkable
class Store(Protocol):
    """Events are appended, items and users upserted, a user can be erased.

    `events` frames carry the interaction columns (timestamp as UTC milliseconds) plus an
    int64 `event_key`; a key seen before is a re-sent event and is not stored again.
    """

    def atomic(self) -> AbstractContextManager[None]:
        """Everything written inside is committed together or not at all."""
        ...

    def append_events(self, events: pd.DataFrame) -> AppendResult: ...

    def upsert_items(self, items: pd.DataFrame) -> int: ...

    def delete_item(self, item_id: str) -> bool: ...

    def upsert_users(self, users: pd.DataFrame) -> int: ...

    def erase_user(self, user_id: str) -> ErasureReport: ...

    def interactions(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_rows: int = 100_000,
    ) -> Iterator[pa.RecordBatch]:
        """Events in storage order as Arrow batches of INTERACTION_ARROW_SCHEMA."""
        ...

    def user_events(self, user_id: str, limit: int = 500) -> pd.DataFrame: ...

    def items(self) -> pd.DataFrame: ...

    def users(self) -> pd.DataFrame: ...

    def serving_items(self) -> pd.DataFrame:
        """The catalogue columns the request path uses (SERVING_ITEM_COLUMNS): tags as lists,
        available as a bool (unset counts as available)."""
        ...

    def serving_profiles(self) -> pd.DataFrame:
        """user_id, consent, onboarding of the users whose profile changes an answer: no
        consent, or onboarding answers."""
        ...

    def purchase_summary(self) -> pd.DataFrame:
        """One row per (user_id, item_id) a known user bought: size (purchases) and max (the
        last one's time, unix ms; 0 when undated)."""
        ...

    def count_events(self) -> int: ...

    def record_import(self, record: dict[str, object]) -> int: ...

    def imports(self) -> pd.DataFrame: ...

    def close(self) -> None: ...


def is_missing(value: object) -> bool:
    """None, pandas' NA or a float NaN: an empty cell, stored as NULL."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)
