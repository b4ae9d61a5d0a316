"""The dashboard's reads of a store the exposure log came after (the shared suite,
tests/store_conformance.py, covers the rest)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nextbuy.store.dashboard_reads import open_dashboard_reads


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
