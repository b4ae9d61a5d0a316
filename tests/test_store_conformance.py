"""The SQLite store passes the store conformance suites: the events, catalogue and users
(StoreConformance) and the record tables beside them (RecordsConformance)."""

from __future__ import annotations

from pathlib import Path

from nextbuy.store.dashboard_reads import open_dashboard_reads
from nextbuy.store.outcomes import open_outcome_reader
from nextbuy.store.records import (
    open_allocation_table,
    open_erasure_table,
    open_experiment_table,
    open_exposure_table,
    open_key_table,
)
from nextbuy.store.sqlite import SQLiteStore
from store_conformance import (
    DashboardReadsConformance,
    OutcomesConformance,
    Records,
    RecordsConformance,
    StoreConformance,
)


class TestSQLiteStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> SQLiteStore:
        return SQLiteStore(tmp_path / "store.sqlite")


def sqlite_records(tmp_path: Path) -> Records:
    path = tmp_path / "store.sqlite"
    SQLiteStore(path).close()  # the store creates the tables
    return Records(
        store=lambda: SQLiteStore(path),
        keys=lambda: open_key_table(path),
        erasures=lambda: open_erasure_table(path),
        exposures=lambda: open_exposure_table(path),
        experiments=lambda: open_experiment_table(path),
        allocations=lambda: open_allocation_table(path),
        outcomes=lambda: open_outcome_reader(path),
        dashboard=lambda: open_dashboard_reads(path),
    )


class TestSQLiteRecords(RecordsConformance, OutcomesConformance, DashboardReadsConformance):
    def open_records(self, tmp_path: Path) -> Records:
        return sqlite_records(tmp_path)
