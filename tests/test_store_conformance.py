"""The SQLite store passes the store conformance suite."""

from __future__ import annotations

from pathlib import Path

from nextbuy.store.sqlite import SQLiteStore
from store_conformance import StoreConformance


class TestSQLiteStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> SQLiteStore:
        return SQLiteStore(tmp_path / "store.sqlite")
