"""The dashboard's reads behind the store, on a real SQLite store with planted events: counts
per day and type, the change marker, the import log's head and the item counts of drift."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from nextbuy.store.dashboard_reads import DashboardReads, open_dashboard_reads
from nextbuy.store.records import open_exposure_table
from nextbuy.store.sqlite import SQLiteStore

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DAY0 = 20_000  # day number since the epoch
T0 = DAY0 * DAY_MS

# (event key, user, item, type, ts, purchase value, recommendation id)
PLANTED: list[tuple[int, str, str, str, int, float | None, str | None]] = [
    (1, "a", "i1", "view", T0 + 1 * HOUR_MS, None, None),
    (2, "a", "i1", "view", T0 + 2 * HOUR_MS, None, "r1"),
    (3, "a", "i1", "purchase", T0 + 3 * HOUR_MS, 5.0, "r1"),
    (4, "b", "i2", "purchase", T0 + DAY_MS + 1 * HOUR_MS, 7.5, None),
    (5, "b", "i2", "click", T0 + DAY_MS + 2 * HOUR_MS, None, "r2"),
    (6, "c", "i1", "purchase", T0 + 2 * DAY_MS + 1 * HOUR_MS, 2.0, None),
    (7, "c", "i3", "purchase", T0 + 2 * DAY_MS + 2 * HOUR_MS, 1.0, None),
]
END = T0 + 3 * DAY_MS


def _frame(rows: list[tuple[int, str, str, str, int, float | None, str | None]]) -> pd.DataFrame:
    keys, users, items, kinds, times, values, recs = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "event_key": list(keys),
            "user_id": list(users),
            "item_id": list(items),
            "event_type": list(kinds),
            "timestamp": list(times),
            "value": list(values),
            "recommendation_id": list(recs),
        }
    )


def _undated(key: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"event_key": [key], "user_id": ["c"], "item_id": ["i3"], "event_type": ["view"]}
    )


def _expected_cells(start_ms: int, end_ms: int) -> dict[tuple[int, str], tuple]:
    """(day, type) -> (events, attributed, revenue, last ts), counted from PLANTED."""
    cells: dict[tuple[int, str], list[Any]] = {}
    for _, _, _, kind, ts, value, rec in PLANTED:
        if not start_ms <= ts < end_ms:
            continue
        cell = cells.setdefault((ts // DAY_MS, kind), [0, 0, None, 0])
        cell[0] += 1
        cell[1] += rec is not None
        if kind == "purchase":
            cell[2] = (cell[2] or 0.0) + value
        cell[3] = max(cell[3], ts)
    return {key: tuple(cell) for key, cell in cells.items()}


def _cells(rows: list[tuple[Any, ...]]) -> dict[tuple[int, str], tuple]:
    return {(day, kind): tuple(rest) for day, kind, *rest in rows}


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[SQLiteStore, DashboardReads]]:
    store = SQLiteStore(tmp_path / "store.sqlite")
    store.append_events(_frame(PLANTED))
    store.append_events(_undated(100))
    reads = open_dashboard_reads(store.path)
    yield store, reads
    reads.close()
    store.close()


def test_daily_counts_of_every_event_match_the_planted_ones(planted) -> None:
    _, reads = planted
    rows, undated = reads.daily_counts_all(END)
    assert _cells(rows) == _expected_cells(0, END)
    assert _cells(rows)[(DAY0, "view")] == (2, 1, None, T0 + 2 * HOUR_MS)
    assert _cells(rows)[(DAY0 + 2, "purchase")] == (2, 0, 3.0, T0 + 2 * DAY_MS + 2 * HOUR_MS)
    assert undated == 1
    before_last_day, _ = reads.daily_counts_all(T0 + 2 * DAY_MS)  # the bound is exclusive
    assert _cells(before_last_day) == _expected_cells(0, T0 + 2 * DAY_MS)


def test_daily_counts_of_a_range_come_with_their_check_only_when_asked(planted) -> None:
    _, reads = planted
    start = T0 + DAY_MS
    rows, dated, undated = reads.daily_counts_between(start, END, verify=True)
    assert _cells(rows) == _expected_cells(start, END)
    assert (dated, undated) == (len(PLANTED), 1)
    rows, dated, undated = reads.daily_counts_between(start, T0 + 2 * DAY_MS, verify=False)
    assert _cells(rows) == _expected_cells(start, T0 + 2 * DAY_MS)
    assert (dated, undated) == (None, None)
    reads.ensure_daily_index()
    reads.ensure_daily_index()  # a second call changes nothing
    again, _, _ = reads.daily_counts_between(start, T0 + 2 * DAY_MS, verify=False)
    assert again == rows


def test_the_change_marker_moves_only_when_another_connection_commits(planted) -> None:
    store, reads = planted
    first = reads.change_marker()
    reads.daily_counts_all(END)  # reads, here or through the store, change nothing
    store.count_events()
    assert reads.change_marker() == first
    store.append_events(_frame([(200, "d", "i1", "view", END + 1, None, None)]))
    moved = reads.change_marker()
    assert moved != first
    assert reads.change_marker() == moved
    store.erase_user("d")
    assert reads.change_marker() != moved


def test_the_last_import_id_follows_the_import_log(planted) -> None:
    store, reads = planted
    assert reads.last_import_id() == 0
    record = {
        "kind": "events",
        "source": "planted.csv",
        "started_at": 1,
        "finished_at": 2,
        "rows": 7,
        "stored": 7,
        "duplicates": 0,
        "rejected": 0,
    }
    first = store.record_import(record)
    assert reads.last_import_id() == first
    second = store.record_import(record)
    assert second > first and reads.last_import_id() == second


def test_purchased_item_counts_take_only_purchases_at_or_after_the_time(planted) -> None:
    _, reads = planted
    since = T0 + DAY_MS + 1 * HOUR_MS  # exactly the second purchase: it counts
    rows = sorted(reads.purchased_item_counts(since, limit=100))
    assert rows == [
        ("i1", 1, T0 + 2 * DAY_MS + 1 * HOUR_MS, T0 + 2 * DAY_MS + 1 * HOUR_MS),
        ("i2", 1, since, since),
        ("i3", 1, T0 + 2 * DAY_MS + 2 * HOUR_MS, T0 + 2 * DAY_MS + 2 * HOUR_MS),
    ]
    latest = reads.purchased_item_counts(0, limit=1)
    assert latest == [("i3", 1, T0 + 2 * DAY_MS + 2 * HOUR_MS, T0 + 2 * DAY_MS + 2 * HOUR_MS)]
    everything = {item: n for item, n, _, _ in reads.purchased_item_counts(0, limit=100)}
    assert everything == {"i1": 2, "i2": 1, "i3": 1}


def test_exposed_item_counts_cover_the_latest_shown_lists(planted) -> None:
    store, reads = planted
    table = open_exposure_table(store.path)

    def served(rec: str, shown: int, at: int, items: list[str]) -> None:
        exposure = (rec, "u1", None, "home", "recommend", "v0001", shown, None, 0, at, len(items))
        rows = [(rec, i + 1, item, 1.0, "u1") for i, item in enumerate(items)]
        table.append([exposure], rows, [])

    served("rec-1", 1, 1_000, ["i1", "i2"])
    served("rec-2", 1, 2_000, ["i1", "i3"])
    served("rec-3", 0, 3_000, ["i4"])  # a shadow list, never shown
    table.close()
    assert reads.exposed_item_counts(10) == {"i1": 2, "i2": 1, "i3": 1}
    assert reads.exposed_item_counts(1) == {"i1": 1, "i3": 1}


def test_a_store_without_an_exposure_log_has_no_exposed_items(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # a store from before the exposure log
        conn.execute("CREATE TABLE events (item_id TEXT, event_type TEXT, ts INTEGER)")
        conn.execute("INSERT INTO events VALUES ('i1', 'purchase', 5)")
    reads = open_dashboard_reads(path)
    try:
        assert reads.exposed_item_counts(10) == {}
        assert reads.purchased_item_counts(0, 10) == [("i1", 1, 5, 5)]
    finally:
        reads.close()
