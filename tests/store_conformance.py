"""The behaviour every Store backend owes its callers, as one suite of tests.

A backend's test module subclasses ``StoreConformance`` and defines ``make_store``; the
suite runs unchanged against each (SQLite in test_store_conformance.py, a toy in-memory
store in test_toy_store.py). ``RecordsConformance`` does the same for the record tables kept
beside the events (keys, erasures, served lists, experiments, allocations), through
``open_records``. Both speak only through the protocols: nothing here knows about SQL,
files or drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from nextbuy.errors import StoreError
from nextbuy.store.base import INTERACTION_ARROW_SCHEMA, SERVING_ITEM_COLUMNS, Store
from nextbuy.store.outcomes import OutcomeReader
from nextbuy.store.records import (
    AllocationTable,
    ErasureTable,
    ExperimentTable,
    ExposureTable,
    KeyRecord,
    KeyTable,
)


def events(*rows: tuple, start_key: int = 1) -> pd.DataFrame:
    """Event rows (user_id, item_id, event_type, unix ms[, value]) as ingest hands them over."""
    frame = pd.DataFrame(
        [(*r, None)[:5] for r in rows],
        columns=["user_id", "item_id", "event_type", "timestamp", "value"],
    )
    frame.insert(0, "event_key", range(start_key, start_key + len(frame)))
    frame["event_key"] = frame["event_key"].astype("int64")
    return frame


def _ms(day: int) -> int:
    return int(datetime(2024, 1, day, tzinfo=UTC).timestamp() * 1000)


class Planted(Exception):
    """Raised inside a transaction to see it undone."""


class StoreConformance:
    """Subclasses provide ``make_store(tmp_path)`` returning a fresh, empty store."""

    def make_store(self, tmp_path: Path) -> Store:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        store = self.make_store(tmp_path)
        yield store
        store.close()

    # -- events ---------------------------------------------------------------------------
    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    def test_an_event_key_seen_before_is_not_stored_twice(self, store: Store) -> None:
        first = store.append_events(events(("a", "x", "view", _ms(1)), ("a", "y", "view", _ms(2))))
        again = store.append_events(
            events(("a", "y", "view", _ms(2)), ("b", "z", "purchase", _ms(3)), start_key=2)
        )
        assert (first.stored, first.duplicates) == (2, 0)
        assert (again.stored, again.duplicates) == (1, 1)
        assert store.count_events() == 3
        assert store.append_events(events().iloc[:0]).stored == 0

    def test_interactions_stream_every_event_in_key_order_in_bounded_batches(
        self, store: Store
    ) -> None:
        rows = [(f"u{i % 7}", f"i{i % 11}", "view", _ms(1 + i % 20)) for i in range(95)]
        store.append_events(events(*rows))
        batches = list(store.interactions(batch_rows=20))
        assert [b.num_rows for b in batches] == [20, 20, 20, 20, 15]
        assert all(b.schema.equals(INTERACTION_ARROW_SCHEMA) for b in batches)
        table = pa.Table.from_batches(batches).to_pandas()
        assert table["event_key"].tolist() == list(range(1, 96))
        assert table["user_id"].tolist() == [r[0] for r in rows]
        expected = pd.to_datetime([r[3] for r in rows], unit="ms", utc=True)
        assert (table["timestamp"].to_numpy() == expected.to_numpy()).all()

    def test_interactions_keep_to_the_time_window(self, store: Store) -> None:
        store.append_events(events(*[("u", f"i{d}", "view", _ms(d)) for d in range(1, 11)]))
        since = datetime(2024, 1, 3, tzinfo=UTC)
        until = datetime(2024, 1, 6, tzinfo=UTC)
        window = pa.Table.from_batches(list(store.interactions(since=since, until=until)))
        assert window.column("item_id").to_pylist() == ["i3", "i4", "i5"]

    def test_a_users_events_come_newest_first_up_to_the_limit(self, store: Store) -> None:
        store.append_events(
            events(("a", "x", "view", _ms(1)), ("a", "y", "view", _ms(3)), ("b", "z", "view", 0))
        )
        store.append_events(events(("a", "w", "purchase", _ms(2), 9.5), start_key=4))
        own = store.user_events("a")
        assert own["item_id"].tolist() == ["y", "w", "x"]
        assert own.loc[own["item_id"] == "w", "value"].item() == 9.5
        assert store.user_events("a", limit=1)["item_id"].tolist() == ["y"]
        assert store.user_events("nobody").empty

    def test_a_failed_transaction_leaves_nothing_behind(self, store: Store) -> None:
        store.append_events(events(("a", "x", "view", _ms(1))))
        with pytest.raises(Planted), store.atomic():
            store.append_events(events(("b", "y", "view", _ms(2)), start_key=2))
            store.upsert_items(pd.DataFrame([{"item_id": "y", "title": "Y"}]))
            raise Planted
        assert store.count_events() == 1
        assert store.items().empty
        with store.atomic():
            store.append_events(events(("b", "y", "view", _ms(2)), start_key=2))
        assert store.count_events() == 2

    # -- catalogue --------------------------------------------------------------------------
    def test_items_are_upserted_and_deleted(self, store: Store) -> None:
        store.upsert_items(pd.DataFrame([{"item_id": "a", "title": "A", "price": 3.0}]))
        store.upsert_items(
            pd.DataFrame([{"item_id": "a", "title": "A2", "price": 4.0}, {"item_id": "b"}])
        )
        items = store.items().set_index("item_id")
        assert sorted(items.index) == ["a", "b"]
        assert (items.loc["a", "title"], items.loc["a", "price"]) == ("A2", 4.0)
        assert bool(items.loc["b", "available"]) is True
        assert store.delete_item("a") and not store.delete_item("a")
        assert store.items()["item_id"].tolist() == ["b"]

    def test_serving_items_carry_tags_as_lists_and_availability_as_bools(
        self, store: Store
    ) -> None:
        store.upsert_items(
            pd.DataFrame(
                [
                    {"item_id": "a", "tags": ["red", "wool"], "available": False, "stock": 0.0},
                    {"item_id": "b", "category": "mugs", "description": "long text"},
                ]
            )
        )
        serving = store.serving_items().set_index("item_id")
        assert list(serving.reset_index().columns) == list(SERVING_ITEM_COLUMNS)
        assert serving.loc["a", "tags"] == ["red", "wool"]
        assert not serving.loc["a", "available"]
        assert bool(serving.loc["b", "available"]) is True
        assert serving.loc["b", "category"] == "mugs"

    # -- users ------------------------------------------------------------------------------
    def test_users_are_upserted_with_consent_by_default(self, store: Store) -> None:
        store.upsert_users(pd.DataFrame([{"user_id": "a", "attributes": {"region": "north"}}]))
        store.upsert_users(pd.DataFrame([{"user_id": "b", "consent": False}]))
        users = store.users().set_index("user_id")
        assert users.loc["a", "attributes"] == {"region": "north"}
        assert bool(users.loc["a", "consent"]) and not bool(users.loc["b", "consent"])

    def test_serving_profiles_are_only_the_ones_that_change_an_answer(self, store: Store) -> None:
        store.upsert_users(
            pd.DataFrame(
                [
                    {"user_id": "plain"},
                    {"user_id": "private", "consent": False},
                    {"user_id": "new", "onboarding": {"categories": ["tea"]}},
                ]
            )
        )
        profiles = store.serving_profiles().set_index("user_id")
        assert sorted(profiles.index) == ["new", "private"]
        assert not bool(profiles.loc["private", "consent"])
        assert profiles.loc["new", "onboarding"] == {"categories": ["tea"]}

    def test_purchase_summary_counts_known_customers_purchases(self, store: Store) -> None:
        store.append_events(
            events(
                ("a", "x", "purchase", 1_000),
                ("a", "x", "purchase", 3_000),
                ("a", "y", "view", 4_000),
                ("b", "x", "purchase", 2_000),
                (None, "x", "purchase", 5_000),
            )
        )
        summary = store.purchase_summary().set_index(["user_id", "item_id"])
        assert summary.to_dict("index") == {
            ("a", "x"): {"size": 2, "max": 3_000},
            ("b", "x"): {"size": 1, "max": 2_000},
        }

    # -- erasure and the import log ---------------------------------------------------------
    def test_erasure_removes_the_users_events_and_profile_only(self, store: Store) -> None:
        store.append_events(
            events(("a", "x", "view", 1), ("a", "y", "purchase", 2), ("b", "x", "view", 3))
        )
        store.upsert_users(pd.DataFrame([{"user_id": "a"}, {"user_id": "b"}]))
        report = store.erase_user("a")
        assert report.rows_deleted["events"] == 2 and report.rows_deleted["users"] == 1
        assert report.total >= 3
        assert store.user_events("a").empty and store.count_events() == 1
        assert store.users()["user_id"].tolist() == ["b"]
        assert store.erase_user("a").total == 0

    def test_imports_are_logged_in_order_with_increasing_ids(self, store: Store) -> None:
        base = {"source": "a.csv", "sha256": None, "rows": 3, "stored": 2, "duplicates": 1}
        record = {**base, "started_at": 1, "finished_at": 2, "rejected": 0, "rejects_path": None}
        first = store.record_import({**record, "kind": "interactions"})
        second = store.record_import({**record, "kind": "items", "source": "b.csv"})
        assert second > first
        log = store.imports()
        assert log["import_id"].tolist() == [first, second]
        assert log["source"].tolist() == ["a.csv", "b.csv"]
        assert log["stored"].tolist() == [2, 2]


@dataclass
class Records:
    """One backend's record tables, all on the same store."""

    keys: Callable[[], KeyTable]  # each call opens the table anew (another process's view)
    erasures: Callable[[], ErasureTable]
    exposures: Callable[[], ExposureTable]
    experiments: Callable[[], ExperimentTable]
    allocations: Callable[[], AllocationTable]
    outcomes: Callable[[], OutcomeReader]


class RecordsConformance:
    """Subclasses provide ``open_records(tmp_path)`` on a fresh, empty store."""

    def open_records(self, tmp_path: Path) -> Records:
        raise NotImplementedError

    @pytest.fixture
    def records(self, tmp_path: Path) -> Records:
        return self.open_records(tmp_path)

    def test_keys_round_trip_oldest_first_and_go_by_id_or_name(self, records: Records) -> None:
        keys = records.keys()
        first = KeyRecord("a1", "storefront", ("read",), b"\x00salt", b"\x01digest", 1_000)
        second = KeyRecord("b2", "importer", ("admin", "write"), b"salt2", b"digest2", 2_000)
        keys.add(second)
        keys.add(first)
        assert records.keys().all() == [first, second]
        assert keys.remove("importer") == 1 and keys.remove("a1") == 1
        assert keys.remove("a1") == 0 and keys.all() == []

    def test_erasures_keep_the_latest_time_per_user(self, records: Records) -> None:
        erasures = records.erasures()
        erasures.record("hash-1", 10)
        erasures.record("hash-2", 20)
        erasures.record("hash-1", 30)
        assert records.erasures().all() == {"hash-1": 30, "hash-2": 20}

    def test_experiments_insert_once_then_update_keeping_their_source(
        self, records: Records
    ) -> None:
        table = records.experiments()
        assert table.all() == []
        table.put("later", '{"v": 1}', "api", insert=True, at_ms=2)
        table.put("first", '{"v": 1}', "api", insert=True, at_ms=1)
        with pytest.raises(StoreError):
            table.put("first", '{"v": 2}', "api", insert=True, at_ms=3)
        table.put("first", '{"v": 3}', "config", insert=False, at_ms=4)
        expected = [("first", '{"v": 3}', "api"), ("later", '{"v": 1}', "api")]
        assert records.experiments().all() == expected

    def test_served_lists_are_written_all_or_none_and_once(self, records: Records) -> None:
        table = records.exposures()
        exposure = ("rec-1", "u1", None, "home", "recommend", "v0001", 1, None, 0, 1_000, 2)
        items = [("rec-1", 1, "i1", 0.9, "u1"), ("rec-1", 2, "i2", 0.5, "u1")]
        table.append([exposure], items, [])
        table.append([exposure], items, [])  # a list written again counts once
        good = ("rec-2", *exposure[1:])
        with pytest.raises(StoreError):
            table.append([good, ("rec-3", "u1")], [], [])  # a bad row: none of the batch is kept
        table.close()
        logged = records.outcomes().click_logs(None, None, None)
        assert sorted(logged["recommendation_id"]) == ["rec-1", "rec-1"]
        assert sorted(logged["item_id"]) == ["i1", "i2"]

    def test_allocations_keep_each_experiments_history_in_time_order(
        self, records: Records
    ) -> None:
        table = records.allocations()
        table.add("banner", 2_000, {"a": 0.3, "b": 0.7}, {"a": 1}, {"a": 10})
        table.add("banner", 1_000, {"a": 0.5, "b": 0.5}, {}, {})
        table.add("other", 1_500, {"x": 1.0}, {}, {})
        history = table.history("banner")
        assert history == [(1_000, {"a": 0.5, "b": 0.5}), (2_000, {"a": 0.3, "b": 0.7})]
        assert table.history("none") == []
