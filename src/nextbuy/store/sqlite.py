"""The embedded default store: one SQLite file in WAL mode."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from nextbuy.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS
from nextbuy.errors import StoreError
from nextbuy.store.base import (
    INTERACTION_ARROW_SCHEMA,
    SERVING_ITEM_COLUMNS,
    AppendResult,
    ErasureReport,
    is_missing,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_key INTEGER PRIMARY KEY,
    user_id TEXT,
    item_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts INTEGER,
    value REAL,
    quantity REAL,
    session_id TEXT,
    order_id TEXT,
    recommendation_id TEXT,
    context TEXT,
    event_id TEXT
);
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    title TEXT, description TEXT, category TEXT, brand TEXT,
    price REAL, margin REAL, available INTEGER NOT NULL DEFAULT 1, stock REAL,
    created_at INTEGER, tags TEXT, attributes TEXT,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    attributes TEXT, consent INTEGER NOT NULL DEFAULT 1, onboarding TEXT,
    created_at INTEGER, updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS imports (
    import_id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, source TEXT NOT NULL, sha256 TEXT,
    started_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,
    rows INTEGER NOT NULL, stored INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    rejected INTEGER NOT NULL, rejects_path TEXT
);
-- Served lists (nextbuy.serving.exposures writes them); shown = 0 for shadow lists.
CREATE TABLE IF NOT EXISTS exposures (
    recommendation_id TEXT PRIMARY KEY,
    user_id TEXT, session_id TEXT,
    placement TEXT NOT NULL, route TEXT, model_version TEXT,
    shown INTEGER NOT NULL DEFAULT 1, shadow_of TEXT, shuffled INTEGER NOT NULL DEFAULT 0,
    served_at INTEGER NOT NULL, n_items INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS exposures_served_at ON exposures(served_at);
CREATE TABLE IF NOT EXISTS exposure_items (
    recommendation_id TEXT NOT NULL, position INTEGER NOT NULL,
    item_id TEXT NOT NULL, score REAL, user_id TEXT,
    PRIMARY KEY (recommendation_id, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exposure_items_user ON exposure_items(user_id, item_id);
-- The experiment arms a served list belongs to (one row per layer that assigned it).
CREATE TABLE IF NOT EXISTS exposure_arms (
    experiment TEXT NOT NULL, recommendation_id TEXT NOT NULL,
    variant TEXT NOT NULL, unit_id TEXT NOT NULL, user_id TEXT,
    shown INTEGER NOT NULL DEFAULT 1, served_at INTEGER NOT NULL,
    PRIMARY KEY (experiment, recommendation_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exposure_arms_user ON exposure_arms(user_id);
-- Experiments created through the API or CLI, and life-cycle changes of configured ones.
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, source TEXT NOT NULL,
    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL
);
-- Every bandit recomputation, so traffic share over time can be shown.
CREATE TABLE IF NOT EXISTS experiment_allocations (
    experiment TEXT NOT NULL, computed_at INTEGER NOT NULL,
    weights TEXT NOT NULL, successes TEXT, trials TEXT,
    PRIMARY KEY (experiment, computed_at)
);
-- Attribution looks events up by the list they follow; most imported rows have none.
CREATE INDEX IF NOT EXISTS events_recommendation ON events(recommendation_id)
    WHERE recommendation_id IS NOT NULL;
"""

# Stored columns: the data model's, with the time as ts and the bookkeeping ones.
EVENT_COLUMNS: tuple[str, ...] = (
    "event_key",
    *("ts" if c == "timestamp" else c for c in INTERACTION_COLUMNS),
)
ITEM_STORE_COLUMNS: tuple[str, ...] = (*ITEM_COLUMNS, "updated_at")
USER_STORE_COLUMNS: tuple[str, ...] = (*USER_COLUMNS, "updated_at")

ROWS_PER_STATEMENT = 500
SLICE_ROWS = 20_000
SMALL_BATCH_ROWS = 1_000
SQLITE_MAX_VARIABLES = 32_766

# Every table holding rows about a user, with the column naming them: erasure walks this list,
# so a table added later that keys on users must be added here.
USER_KEYED_TABLES: dict[str, str] = {
    "events": "user_id",
    "users": "user_id",
    "exposures": "user_id",
    "exposure_items": "user_id",
    "exposure_arms": "user_id",
}


def _now_ms() -> int:
    return int(datetime.now().timestamp() * 1000)


def _column_values(frame: pd.DataFrame, column: str) -> list[Any]:
    """A column as Python values with missing ones as None, which sqlite3 stores as NULL."""
    if column not in frame:
        return [None] * len(frame)
    series = frame[column]
    if series.dtype.kind in "iuf":
        values = series.to_numpy(dtype=object)
        mask = series.isna().to_numpy()
        values[mask] = None
        return values.tolist()
    return series.astype(object).where(series.notna(), None).tolist()


def _flat_values(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[Any]:
    """Row-major values of these columns as Python objects, missing ones as None.

    One object matrix raveled in C: building it row by row in Python cost a quarter of an
    import's time.
    """
    arrays = []
    for column in columns:
        series = frame[column]
        values = series.to_numpy(dtype=object)
        missing = series.isna().to_numpy()
        if missing.any():
            values = values.copy()
            values[missing] = None
        arrays.append(values)
    return np.column_stack(arrays).ravel().tolist()


def _rows(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return list(zip(*(_column_values(frame, c) for c in columns), strict=True))


class SQLiteStore:
    """Store on one SQLite file. Safe to share between threads; writes are serialised."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store ({exc})") from None
        self._lock = threading.RLock()
        self._in_transaction = False
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "cache_size=-65536",
            "temp_store=MEMORY",
            "foreign_keys=ON",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.executescript(SCHEMA)

    # -- transactions ---------------------------------------------------------------------
    @contextmanager
    def atomic(self) -> Iterator[None]:
        with self._lock:
            if self._in_transaction:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            try:
                yield
            except BaseException:
                # BaseException on purpose: Ctrl-C must roll back too.
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._in_transaction = False

    # -- events -----------------------------------------------------------------------------
    def append_events(self, events: pd.DataFrame) -> AppendResult:
        if events.empty:
            return AppendResult(0, 0)
        if len(events) <= SMALL_BATCH_ROWS:
            return self._append_small(events)
        frame = events.rename(columns={"timestamp": "ts"})
        # Binding values one by one is the cost of an import: bind only columns that hold data,
        # many rows per statement, and build the values a slice at a time to bound memory.
        columns = tuple(c for c in EVENT_COLUMNS if c in frame and frame[c].notna().any())
        width = len(columns)
        per_statement = max(1, min(ROWS_PER_STATEMENT, SQLITE_MAX_VARIABLES // width))
        row_sql = "(" + ",".join("?" * width) + ")"
        head = f"INSERT OR IGNORE INTO events ({','.join(columns)}) VALUES "
        full_sql = head + ",".join([row_sql] * per_statement)
        n = len(frame)
        with self.atomic():
            before = self._conn.total_changes
            for start in range(0, n, SLICE_ROWS):
                part = frame.iloc[start : start + SLICE_ROWS]
                values = _flat_values(part, columns)
                rows = len(part)
                cut = (rows // per_statement) * per_statement
                step = per_statement * width
                for offset in range(0, cut * width, step):
                    self._conn.execute(full_sql, values[offset : offset + step])
                if cut < rows:
                    tail_sql = head + ",".join([row_sql] * (rows - cut))
                    self._conn.execute(tail_sql, values[cut * width :])
            stored = self._conn.total_changes - before
        return AppendResult(stored=stored, duplicates=n - stored)

    def _append_small(self, events: pd.DataFrame) -> AppendResult:
        """API-sized batches: plain Python lists; pandas' per-call overhead (a rename copy,
        to_dict) cost ~1 ms of a 20-event batch whose insert takes 0.1 ms."""
        columns: list[str] = []
        lists: list[list[Any]] = []
        for column in EVENT_COLUMNS:
            source = "timestamp" if column == "ts" else column
            if source not in events:
                continue
            values = [None if is_missing(v) else v for v in events[source].tolist()]
            if any(v is not None for v in values):
                columns.append(column)
                lists.append(values)
        rows = list(zip(*lists, strict=True))
        sql = (
            f"INSERT OR IGNORE INTO events ({','.join(columns)}) "
            f"VALUES ({','.join('?' * len(columns))})"
        )
        with self.atomic():
            before = self._conn.total_changes
            self._conn.executemany(sql, rows)
            stored = self._conn.total_changes - before
        return AppendResult(stored=stored, duplicates=len(rows) - stored)

    def interactions(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        batch_rows: int = 100_000,
    ) -> Iterator[pa.RecordBatch]:
        where, params = [], []
        if since is not None:
            where.append("ts >= ?")
            params.append(int(since.timestamp() * 1000))
        if until is not None:
            where.append("ts < ?")
            params.append(int(until.timestamp() * 1000))
        sql = f"SELECT {','.join(EVENT_COLUMNS)} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_key"
        # A separate connection reads a consistent snapshot while writers keep appending.
        reader = sqlite3.connect(self.path, check_same_thread=False)
        try:
            cursor = reader.execute(sql, params)
            while rows := cursor.fetchmany(batch_rows):
                yield _rows_to_batch(rows)
        finally:
            reader.close()

    def user_events(self, user_id: str, limit: int = 500) -> pd.DataFrame:
        sql = (
            f"SELECT {','.join(EVENT_COLUMNS)} FROM events WHERE user_id = ? "
            "ORDER BY ts DESC LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, (user_id, limit)).fetchall()
        return _rows_to_batch(rows).to_pandas() if rows else _empty_events()

    def count_events(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    # -- catalog and users -------------------------------------------------------------------
    def upsert_items(self, items: pd.DataFrame) -> int:
        frame = items.copy()
        frame["updated_at"] = _now_ms()
        for column in ("tags", "attributes"):
            if column in frame:
                frame[column] = frame[column].map(_json_or_none)
        if "available" in frame:
            frame["available"] = frame["available"].fillna(True).astype(bool).astype(int)
        else:
            frame["available"] = 1
        return self._upsert("items", frame, ITEM_STORE_COLUMNS)

    def delete_item(self, item_id: str) -> bool:
        with self.atomic():
            cursor = self._conn.execute("DELETE FROM items WHERE item_id = ?", (item_id,))
        return cursor.rowcount > 0

    def upsert_users(self, users: pd.DataFrame) -> int:
        frame = users.copy()
        frame["updated_at"] = _now_ms()
        for column in ("attributes", "onboarding"):
            if column in frame:
                frame[column] = frame[column].map(_json_or_none)
        if "consent" in frame:
            frame["consent"] = frame["consent"].fillna(True).astype(bool).astype(int)
        else:
            frame["consent"] = 1
        return self._upsert("users", frame, USER_STORE_COLUMNS)

    def _upsert(self, table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> int:
        present = tuple(c for c in columns if c in frame)
        key = present[0]
        updates = ",".join(f"{c}=excluded.{c}" for c in present[1:])
        sql = (
            f"INSERT INTO {table} ({','.join(present)}) VALUES ({','.join('?' * len(present))}) "
            f"ON CONFLICT({key}) DO UPDATE SET {updates}"
        )
        rows = _rows(frame, present)
        with self.atomic():
            self._conn.executemany(sql, rows)
        return len(rows)

    def items(self) -> pd.DataFrame:
        frame = self._read_table("items", ITEM_STORE_COLUMNS)
        for column in ("tags", "attributes"):
            frame[column] = frame[column].map(_json_load)
        frame["available"] = frame["available"].astype(bool)
        return frame

    def users(self) -> pd.DataFrame:
        frame = self._read_table("users", USER_STORE_COLUMNS)
        for column in ("attributes", "onboarding"):
            frame[column] = frame[column].map(_json_load)
        frame["consent"] = frame["consent"].astype(bool)
        return frame

    # The server's reads run on a read-only connection of their own: they need a few columns
    # (and only the profiles that change an answer), not the full tables' JSON conversions.
    def serving_items(self) -> pd.DataFrame:
        with self._read_only() as conn:
            sql = f"SELECT {','.join(SERVING_ITEM_COLUMNS)} FROM items"
            rows = conn.execute(sql).fetchall()
        frame = pd.DataFrame(rows, columns=list(SERVING_ITEM_COLUMNS), dtype=object)
        frame["tags"] = frame["tags"].map(_json_load)
        frame["available"] = frame["available"].map(lambda v: v is None or bool(v))
        return frame

    def serving_profiles(self) -> pd.DataFrame:
        with self._read_only() as conn:
            rows = conn.execute(
                "SELECT user_id, consent, onboarding FROM users "
                "WHERE consent = 0 OR onboarding IS NOT NULL"
            ).fetchall()
        frame = pd.DataFrame(rows, columns=["user_id", "consent", "onboarding"], dtype=object)
        frame["onboarding"] = frame["onboarding"].map(_json_load)
        return frame

    def purchase_summary(self) -> pd.DataFrame:
        # SQLite aggregates in C; streaming every event out would cost seconds per million
        with self._read_only() as conn:
            rows = conn.execute(
                "SELECT user_id, item_id, COUNT(*), COALESCE(MAX(ts), 0) FROM events "
                "WHERE event_type = 'purchase' AND user_id IS NOT NULL GROUP BY user_id, item_id"
            ).fetchall()
        return pd.DataFrame.from_records(rows, columns=["user_id", "item_id", "size", "max"])

    @contextmanager
    def _read_only(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def _read_table(self, table: str, columns: tuple[str, ...]) -> pd.DataFrame:
        with self._lock:
            rows = self._conn.execute(f"SELECT {','.join(columns)} FROM {table}").fetchall()
        return pd.DataFrame.from_records(rows, columns=list(columns))

    def erase_user(self, user_id: str) -> ErasureReport:
        report = ErasureReport(user_id)
        with self.atomic():
            for table, column in USER_KEYED_TABLES.items():
                cursor = self._conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (user_id,))
                report.rows_deleted[table] = cursor.rowcount
        return report

    # -- import log -------------------------------------------------------------------------
    def record_import(self, record: dict[str, object]) -> int:
        columns = list(record)
        sql = f"INSERT INTO imports ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})"
        with self.atomic():
            cursor = self._conn.execute(sql, [record[c] for c in columns])
        return int(cursor.lastrowid or 0)

    def imports(self) -> pd.DataFrame:
        with self._lock:
            cursor = self._conn.execute("SELECT * FROM imports ORDER BY import_id")
            names = [d[0] for d in cursor.description]
            return pd.DataFrame.from_records(cursor.fetchall(), columns=names)

    def table_counts(self) -> dict[str, int]:
        with self._lock:
            return {
                table: int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("events", "items", "users", "imports")
            }

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _json_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def _json_load(value: object) -> Any:
    # Missing values come back as None or NaN depending on the column's other rows.
    return json.loads(value) if isinstance(value, str) and value else None


def _rows_to_batch(rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for name, values in zip(EVENT_COLUMNS, columns, strict=True):
        target = INTERACTION_ARROW_SCHEMA.field("timestamp" if name == "ts" else name).type
        if name == "ts":
            arrays.append(pa.array(values, pa.int64()).cast(target))
        else:
            arrays.append(pa.array(values, target))
    return pa.RecordBatch.from_arrays(arrays, schema=INTERACTION_ARROW_SCHEMA)


def _empty_events() -> pd.DataFrame:
    return INTERACTION_ARROW_SCHEMA.empty_table().to_pandas()
