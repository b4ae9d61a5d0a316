"""The dashboard's aggregate reads: events per day and type, a marker that moves when the
store changes, the head of the import log and the item counts that drift compares.

When an aggregate is extended or rebuilt, how it is checked and cached, and what drift
compares belong to the dashboard; how the figures are read belongs here, behind a protocol,
so another backend implements the same few methods and no dashboard module sees SQL.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

INDEX_SQL = "CREATE INDEX IF NOT EXISTS events_ts ON events(ts)"
# `+ts` keeps the planner off the ts index for the full scan: reading the table in order is
# several times faster than a million index lookups.
FULL_SQL = """
SELECT ts / 86400000, event_type, COUNT(*), SUM(recommendation_id IS NOT NULL),
       SUM(CASE WHEN event_type = 'purchase' THEN value END), MAX(ts)
FROM events WHERE +ts < ? GROUP BY 1, 2
"""
RANGE_SQL = """
SELECT ts / 86400000, event_type, COUNT(*), SUM(recommendation_id IS NOT NULL),
       SUM(CASE WHEN event_type = 'purchase' THEN value END), MAX(ts)
FROM events WHERE ts >= ? AND ts < ? GROUP BY 1, 2
"""
COUNT_SQL = "SELECT COUNT(*) FROM events WHERE ts < ?"
UNDATED_SQL = "SELECT COUNT(*) FROM events WHERE ts IS NULL"
LAST_IMPORT_SQL = "SELECT MAX(import_id) FROM imports"
SHOWN_ITEMS_SQL = """
SELECT i.item_id, COUNT(*) FROM exposure_items i
JOIN (SELECT recommendation_id FROM exposures WHERE shown = 1
      ORDER BY served_at DESC LIMIT ?) x ON x.recommendation_id = i.recommendation_id
GROUP BY i.item_id
"""
PURCHASED_ITEMS_SQL = """
SELECT item_id, COUNT(*), MIN(ts), MAX(ts) FROM
  (SELECT item_id, ts FROM events WHERE event_type = 'purchase' AND ts >= ?
   ORDER BY ts DESC LIMIT ?)
GROUP BY item_id
"""

# (day number since the epoch, event type, events, events naming a recommendation,
#  sum of purchase values or None, latest ts)
DayTypeRow = tuple[Any, ...]
# (item id, purchases, earliest ts, latest ts)
ItemPurchasesRow = tuple[Any, ...]


class DashboardReads(Protocol):
    def daily_counts_between(
        self, start_ms: int, end_ms: int, verify: bool
    ) -> tuple[list[DayTypeRow], int | None, int | None]:
        """Per day and type, the events with `start_ms <= ts < end_ms`; with `verify`, from
        the same snapshot, how many events have `ts < end_ms` and how many have no time
        (both None without `verify`)."""
        ...

    def daily_counts_all(self, end_ms: int) -> tuple[list[DayTypeRow], int]:
        """Per day and type, every event with `ts < end_ms`, and how many have no time,
        from one snapshot."""
        ...

    def ensure_daily_index(self) -> None:
        """Make reads of a time range cheap (they would scan every event otherwise)."""
        ...

    def change_marker(self) -> int:
        """A number that changes whenever another connection commits to the store, the
        serving store's own writer included."""
        ...

    def last_import_id(self) -> int:
        """The id of the newest import logged; 0 before any."""
        ...

    def exposed_item_counts(self, lists: int) -> dict[str, int]:
        """item id -> how often it was in the latest `lists` shown lists; empty for a store
        without an exposure log."""
        ...

    def purchased_item_counts(self, since_ms: int, limit: int) -> list[ItemPurchasesRow]:
        """Per item, the latest `limit` purchases with `ts >= since_ms`."""
        ...

    def close(self) -> None:
        """Let go of what `change_marker` keeps open."""
        ...


def open_dashboard_reads(path: Path) -> DashboardReads:
    return _SQLiteDashboardReads(path)


class _SQLiteDashboardReads:
    """Reads on short read-only connections, except the change marker's own long-lived one.

    Nothing is opened until a read asks, so the dashboard can be set up before the store
    file exists."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._marker: sqlite3.Connection | None = None
        self._indexed = False

    def _read_only(self) -> sqlite3.Connection:
        # autocommit: an explicit BEGIN .. COMMIT is then the one snapshot that several
        # reads share, and a single SELECT holds no transaction open after it
        return sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None
        )

    def daily_counts_between(
        self, start_ms: int, end_ms: int, verify: bool
    ) -> tuple[list[DayTypeRow], int | None, int | None]:
        dated: int | None = None
        undated: int | None = None
        with closing(self._read_only()) as conn:
            conn.execute("BEGIN")  # the new rows and the counts that check them agree
            try:
                rows = conn.execute(RANGE_SQL, (start_ms, end_ms)).fetchall()
                if verify:
                    dated = conn.execute(COUNT_SQL, (end_ms,)).fetchone()[0]
                    undated = conn.execute(UNDATED_SQL).fetchone()[0]
            finally:
                conn.execute("COMMIT")
        return rows, dated, undated

    def daily_counts_all(self, end_ms: int) -> tuple[list[DayTypeRow], int]:
        with closing(self._read_only()) as conn:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(FULL_SQL, (end_ms,)).fetchall()
                undated = conn.execute(UNDATED_SQL).fetchone()[0]
            finally:
                conn.execute("COMMIT")
        return rows, undated

    def ensure_daily_index(self) -> None:
        if self._indexed:
            return
        # a writing connection: the read-only ones cannot create the index
        with closing(sqlite3.connect(self.path, timeout=60)) as conn, conn:
            conn.execute(INDEX_SQL)
        self._indexed = True

    def _marker_connection(self) -> sqlite3.Connection:
        # data_version only moves for commits made by *other* connections, so the marker
        # needs a connection of its own that lives as long as the dashboard (a fresh one
        # would start from scratch); the serving store's writer is "another connection"
        # too, so its writes count
        if self._marker is None:
            self._marker = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, check_same_thread=False
            )
        return self._marker

    def change_marker(self) -> int:
        return int(self._marker_connection().execute("PRAGMA data_version").fetchone()[0])

    def last_import_id(self) -> int:
        found = self._marker_connection().execute(LAST_IMPORT_SQL).fetchone()
        return int(found[0] or 0)

    def exposed_item_counts(self, lists: int) -> dict[str, int]:
        with closing(self._read_only()) as conn:
            try:
                rows = conn.execute(SHOWN_ITEMS_SQL, (lists,)).fetchall()
            except sqlite3.OperationalError:
                return {}  # a store from before the exposure log: nothing served yet
        return {str(item): int(n) for item, n in rows}

    def purchased_item_counts(self, since_ms: int, limit: int) -> list[ItemPurchasesRow]:
        with closing(self._read_only()) as conn:
            return conn.execute(PURCHASED_ITEMS_SQL, (since_ms, limit)).fetchall()

    def close(self) -> None:
        if self._marker is not None:
            self._marker.close()
            self._marker = None
