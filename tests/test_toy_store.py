"""A toy store kept in memory passes the same conformance suite as the SQLite store: the
Store protocol is the whole contract, so a new backend needs nothing beyond it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from nextbuy.config import load_settings
from nextbuy.ingest import ImportOptions, import_file
from nextbuy.store.base import (
    INTERACTION_ARROW_SCHEMA,
    SERVING_ITEM_COLUMNS,
    AppendResult,
    ErasureReport,
    is_missing,
)
from nextbuy.store.sqlite import SQLiteStore
from store_conformance import StoreConformance

EVENT_FIELDS = INTERACTION_ARROW_SCHEMA.names
ITEM_FIELDS = (*SERVING_ITEM_COLUMNS, "description", "attributes")
USER_FIELDS = ("user_id", "attributes", "consent", "onboarding", "created_at")


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class MemoryStore:
    """Rows in dicts; a transaction is a snapshot put back when it fails."""

    def __init__(self) -> None:
        self.events: dict[int, dict[str, Any]] = {}
        self.catalogue: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.import_log: list[dict[str, object]] = []

    @contextmanager
    def atomic(self) -> Iterator[None]:
        saved = copy.deepcopy((self.events, self.catalogue, self.profiles, self.import_log))
        try:
            yield
        except BaseException:
            self.events, self.catalogue, self.profiles, self.import_log = saved
            raise

    def append_events(self, events: pd.DataFrame) -> AppendResult:
        stored = 0
        for row in events.to_dict("records"):
            key = int(row["event_key"])
            if key not in self.events:
                self.events[key] = {f: _cell(row.get(f)) for f in EVENT_FIELDS}
                stored += 1
        return AppendResult(stored, len(events) - stored)

    def interactions(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_rows: int = 100_000,
    ) -> Iterator[pa.RecordBatch]:
        low = _ms(since) if since else None
        high = _ms(until) if until else None
        rows = [
            self.events[k]
            for k in sorted(self.events)
            if (low is None or (self.events[k]["timestamp"] or 0) >= low)
            and (high is None or (self.events[k]["timestamp"] or 0) < high)
        ]
        for start in range(0, len(rows), batch_rows):
            yield _batch(rows[start : start + batch_rows])

    def user_events(self, user_id: str, limit: int = 500) -> pd.DataFrame:
        own = [e for e in self.events.values() if e["user_id"] == user_id]
        own.sort(key=lambda e: e["timestamp"] or 0, reverse=True)
        return _batch(own[:limit]).to_pandas()

    def count_events(self) -> int:
        return len(self.events)

    def upsert_items(self, items: pd.DataFrame) -> int:
        for row in items.to_dict("records"):
            kept = self.catalogue.setdefault(row["item_id"], dict.fromkeys(ITEM_FIELDS))
            kept.update({k: _cell(v) for k, v in row.items() if k in ITEM_FIELDS})
        return len(items)

    def delete_item(self, item_id: str) -> bool:
        return self.catalogue.pop(item_id, None) is not None

    def items(self) -> pd.DataFrame:
        frame = pd.DataFrame(list(self.catalogue.values()), columns=list(ITEM_FIELDS))
        frame["available"] = frame["available"].map(lambda v: v is None or bool(v))
        return frame

    def serving_items(self) -> pd.DataFrame:
        return self.items()[list(SERVING_ITEM_COLUMNS)]

    def upsert_users(self, users: pd.DataFrame) -> int:
        for row in users.to_dict("records"):
            kept = self.profiles.setdefault(row["user_id"], dict.fromkeys(USER_FIELDS))
            kept.update({k: _cell(v) for k, v in row.items() if k in USER_FIELDS})
        return len(users)

    def users(self) -> pd.DataFrame:
        frame = pd.DataFrame(list(self.profiles.values()), columns=list(USER_FIELDS))
        frame["consent"] = frame["consent"].map(lambda v: v is None or bool(v))
        return frame

    def serving_profiles(self) -> pd.DataFrame:
        users = self.users()
        changing = ~users["consent"] | users["onboarding"].notna()
        return users.loc[changing, ["user_id", "consent", "onboarding"]].reset_index(drop=True)

    def purchase_summary(self) -> pd.DataFrame:
        bought = pd.DataFrame(
            [e for e in self.events.values() if e["event_type"] == "purchase" and e["user_id"]],
            columns=list(EVENT_FIELDS),
        )
        summary = bought.groupby(["user_id", "item_id"])["timestamp"].agg(["size", "max"])
        return summary.fillna({"max": 0}).astype({"max": "int64"}).reset_index()

    def erase_user(self, user_id: str) -> ErasureReport:
        own = [k for k, e in self.events.items() if e["user_id"] == user_id]
        for key in own:
            del self.events[key]
        profile = self.profiles.pop(user_id, None)
        return ErasureReport(user_id, {"events": len(own), "users": int(profile is not None)})

    def record_import(self, record: dict[str, object]) -> int:
        self.import_log.append({"import_id": len(self.import_log) + 1, **record})
        return len(self.import_log)

    def imports(self) -> pd.DataFrame:
        return pd.DataFrame(self.import_log)

    def close(self) -> None:
        pass


def _cell(value: Any) -> Any:
    return None if not isinstance(value, list | dict) and is_missing(value) else value


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    columns = {f: [r[f] for r in rows] for f in EVENT_FIELDS}
    arrays = [
        pa.array(columns[f], pa.int64()).cast(INTERACTION_ARROW_SCHEMA.field(f).type)
        if f == "timestamp"
        else pa.array(columns[f], INTERACTION_ARROW_SCHEMA.field(f).type)
        for f in EVENT_FIELDS
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=INTERACTION_ARROW_SCHEMA)


class TestMemoryStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> MemoryStore:
        return MemoryStore()


def test_an_import_into_the_toy_store_reads_back_as_from_sqlite(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    pd.DataFrame(
        {
            "user_id": [f"u{i % 9}" for i in range(300)],
            "item_id": [f"i{i % 13}" for i in range(300)],
            "event_type": ["view", "purchase", "add_to_cart"] * 100,
            "timestamp": [1_700_000_000 + 60 * i for i in range(300)],
        }
    ).to_csv(csv, index=False)
    settings = load_settings(data_dir=tmp_path / "data")
    toy, sqlite = MemoryStore(), SQLiteStore(tmp_path / "store.sqlite")
    try:
        for store in (toy, sqlite):
            import_file(store, settings, csv, ImportOptions("interactions"))
        read = [pa.Table.from_batches(list(s.interactions())).to_pandas() for s in (toy, sqlite)]
    finally:
        sqlite.close()
    assert len(read[0]) == 300
    pd.testing.assert_frame_equal(read[0], read[1])
    assert toy.imports()["stored"].tolist() == [300]
