"""The behaviour every Store backend owes its callers, as one suite of tests.

A backend's test module subclasses ``StoreConformance`` and defines ``make_store``; the
suite runs unchanged against each (SQLite in test_store_conformance.py, a toy in-memory
store in test_toy_store.py). ``RecordsConformance`` does the same for the record tables kept
beside the events (keys, erasures, served lists, experiments, allocations), and
``OutcomesConformance`` and ``DashboardReadsConformance`` for what the outcome reader and the
dashboard's reads give back of planted lists and events, all through ``open_records``. All
speak only through the protocols: nothing here knows about SQL, files or drivers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from nextbuy.errors import StoreError
from nextbuy.store.base import INTERACTION_ARROW_SCHEMA, SERVING_ITEM_COLUMNS, Store
from nextbuy.store.dashboard_reads import DashboardReads
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

    store: Callable[[], Store]  # the events, catalogue and users of the same store
    keys: Callable[[], KeyTable]  # each call opens the table anew (another process's view)
    erasures: Callable[[], ErasureTable]
    exposures: Callable[[], ExposureTable]
    experiments: Callable[[], ExperimentTable]
    allocations: Callable[[], AllocationTable]
    outcomes: Callable[[], OutcomeReader]
    dashboard: Callable[[], DashboardReads]


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


# -- served lists and what followed them -------------------------------------------------
HOUR = 3_600_000
T0 = 1_700_000_000_000
DAY = 24 * HOUR


def served(
    rec: str,
    user: str,
    at: int,
    items: list[str],
    variant: str,
    *,
    placement: str = "home",
    shown: int = 1,
    shadow_of: str | None = None,
    shuffled: int = 0,
) -> tuple[tuple, list[tuple], tuple]:
    """One list served under experiment "exp": its exposures, exposure_items and
    exposure_arms rows, columns in the tables' order."""
    exposure = (rec, user, "s-" + user, placement, "recommend", "v1", shown, shadow_of,
                shuffled, at, len(items))  # fmt: skip
    rows = [(rec, position, item, 1.0, user) for position, item in enumerate(items, start=1)]
    arm = ("exp", rec, variant, user, user, shown, at)
    return exposure, rows, arm


def event(
    user: str, item: str, kind: str, ts: int, rec: str | None = None, value: float | None = None
) -> dict[str, object]:
    return {"user_id": user, "item_id": item, "event_type": kind, "timestamp": ts,
            "value": value, "order_id": None, "recommendation_id": rec}  # fmt: skip


def plant_outcomes(records: Records) -> None:
    """u1 is shown r1 and, an hour later, r2 (both hold i1) in variant a; u2 is shown r3 in
    variant b (shuffled, on pdp) with the shadow list s1 computed beside it."""
    store = records.store()
    store.upsert_users(
        pd.DataFrame({"user_id": ["u1", "u2"], "attributes": [{"region": "n"}, {"region": "s"}]})
    )
    lists = [
        served("r1", "u1", T0, ["i1", "i2"], "a"),
        served("r2", "u1", T0 + HOUR, ["i1", "i3"], "a"),
        served("r3", "u2", T0, ["i4", "i5"], "b", placement="pdp", shuffled=1),
        served("s1", "u2", T0, ["i4", "i6"], "shadow", shown=0, shadow_of="r3"),
    ]
    table = records.exposures()
    table.append([x for x, _, _ in lists], [r for _, rows, _ in lists for r in rows],
                 [a for _, _, a in lists])  # fmt: skip
    table.close()
    events = [
        event("u1", "i9", "view", T0 - 10_000),  # before any list: u1 is a returning user
        event("u1", "i1", "click", T0 + 1_000, "r1"),
        event("u1", "i1", "click", T0 + 2_000, "r1"),  # the same list clicked twice
        event("u1", "i2", "view", T0 + 3_000, "r1"),  # a view is no outcome
        event("u1", "i1", "purchase", T0 + 2 * HOUR, value=10.0),  # view-through: r1 or r2
        event("u1", "i3", "purchase", T0 + HOUR + DAY + 1, value=7.0),  # past r2's window
        event("u3", "i1", "purchase", T0 + 2 * HOUR, value=5.0),  # never shown i1
        event("u2", "i6", "click", T0 + 1_000, "s1"),  # a click sent with a shadow list's id
        event("u2", "i5", "purchase", T0 + 5_000, "r3", value=20.0),
    ]
    frame = pd.DataFrame(events)
    frame.insert(0, "event_key", range(1, len(frame) + 1))
    store.append_events(frame)
    store.close()


class OutcomesConformance:
    """What the outcome reader gives back of planted lists and events; subclasses provide
    ``open_records(tmp_path)`` as for ``RecordsConformance``."""

    def open_records(self, tmp_path: Path) -> Records:
        raise NotImplementedError

    @pytest.fixture
    def reader(self, tmp_path: Path) -> OutcomeReader:
        records = self.open_records(tmp_path)
        plant_outcomes(records)
        return records.outcomes()

    def test_events_sent_with_a_shown_lists_id_are_its_direct_outcomes(
        self, reader: OutcomeReader
    ) -> None:
        read = reader.experiment_outcomes("exp", DAY)
        assert sorted(read.lists["recommendation_id"]) == ["r1", "r2", "r3"]  # not the shadow
        direct = read.direct.sort_values("ts")
        assert list(zip(direct["recommendation_id"], direct["event_type"], strict=True)) == [
            ("r1", "click"),
            ("r1", "click"),
            ("r3", "purchase"),
        ]
        assert direct["value"].iloc[-1] == 20.0

    def test_a_purchase_of_a_shown_item_within_the_window_is_a_view_through(
        self, reader: OutcomeReader
    ) -> None:
        late = reader.experiment_outcomes("exp", DAY).view_through
        # every list that showed i1 to u1 is a candidate; the late i3 purchase and u3's are not
        assert sorted(late["recommendation_id"]) == ["r1", "r2"]
        assert set(late["item_id"]) == {"i1"} and set(late["value"]) == {10.0}
        # r2 was served exactly an hour before the purchase: the window's end is inside it
        assert list(reader.experiment_outcomes("exp", HOUR).view_through["recommendation_id"]) == [
            "r2"
        ]
        none = reader.experiment_outcomes("exp", 0).view_through
        assert none.empty and list(none.columns) == list(late.columns)

    def test_bandit_counts_count_shown_lists_not_events(self, reader: OutcomeReader) -> None:
        successes, trials = reader.bandit_counts("exp", "click")
        assert trials == {"a": 2.0, "b": 1.0}  # the shadow list is no trial
        assert successes == {"a": 1.0}  # r1 clicked twice is one success; s1's click is none
        assert reader.bandit_counts("exp", "purchase") == ({"b": 1.0}, trials)
        assert reader.bandit_counts("other", "click") == ({}, {})

    def test_shadow_lists_are_read_with_the_lists_they_shadow(self, reader: OutcomeReader) -> None:
        read = reader.shadow_lists("exp")
        assert read.lists[["recommendation_id", "shadow_of", "variant"]].values.tolist() == [
            ["s1", "r3", "shadow"]
        ]
        assert list(read.shown["recommendation_id"]) == ["r3"]
        assert len(read.items) == 8  # the items of all four lists
        acted = read.acted.sort_values("ts")
        assert acted[["item_id", "event_type"]].values.tolist() == [
            ["i6", "click"],
            ["i5", "purchase"],
        ]
        assert reader.shadow_lists("other").lists.empty

    def test_click_logs_hold_each_item_of_a_shown_list(self, reader: OutcomeReader) -> None:
        logs = reader.click_logs(None, None, None)
        assert sorted(logs["recommendation_id"].unique()) == ["r1", "r2", "r3"]
        clicked = logs[logs["clicked"] == 1]
        assert clicked[["recommendation_id", "item_id"]].values.tolist() == [["r1", "i1"]]
        assert logs["variant"].isna().all()
        shuffled = reader.click_logs(None, "exp", True)
        assert set(shuffled["recommendation_id"]) == {"r3"} and set(shuffled["variant"]) == {"b"}
        assert set(reader.click_logs(T0 + 1, None, None)["recommendation_id"]) == {"r2"}

    def test_served_performance_groups_item_impressions_and_direct_outcomes(
        self, reader: OutcomeReader
    ) -> None:
        shown, outcomes = reader.served_performance(("placement",), None, None)
        shown = shown.set_index("placement")
        assert shown.loc["home", ["impressions", "lists"]].tolist() == [4, 2]
        assert shown.loc["pdp", ["impressions", "lists"]].tolist() == [2, 1]
        outcomes = outcomes.set_index("placement")
        assert outcomes.loc["home", ["clicks", "purchases"]].tolist() == [2, 0]
        assert outcomes.loc["pdp", ["purchases", "revenue"]].tolist() == [1, 20.0]
        total, _ = reader.served_performance((), None, T0 + 1)
        assert total[["impressions", "lists"]].values.tolist() == [[4, 2]]  # r2 served too late
        with pytest.raises(ValueError):
            reader.served_performance(("x.placement; DROP TABLE events",), None, None)

    def test_segment_sources_and_logged_positions(self, reader: OutcomeReader) -> None:
        first = reader.first_events_of("exp").set_index("user_id")["first_event"]
        assert first.to_dict() == {"u1": T0 - 10_000, "u2": T0 + 1_000}
        users = reader.user_attributes_of("exp").set_index("user_id")["attributes"]
        assert sorted(users.index) == ["u1", "u2"] and '"n"' in users["u1"]
        logged = reader.logged_positions("exp")
        assert len(logged) == 6  # three shown lists of two items, no shadow
        r2 = logged[logged["recommendation_id"] == "r2"].sort_values("position")
        assert r2[["item_id", "position", "variant"]].values.tolist() == [
            ["i1", 1, "a"],
            ["i3", 2, "a"],
        ]


# -- the dashboard's reads -----------------------------------------------------------------
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DAY0 = 20_000  # day number since the epoch
DASH_T0 = DAY0 * DAY_MS

# (event key, user, item, type, ts, purchase value, recommendation id)
PLANTED: list[tuple[int, str, str, str, int, float | None, str | None]] = [
    (1, "a", "i1", "view", DASH_T0 + 1 * HOUR_MS, None, None),
    (2, "a", "i1", "view", DASH_T0 + 2 * HOUR_MS, None, "r1"),
    (3, "a", "i1", "purchase", DASH_T0 + 3 * HOUR_MS, 5.0, "r1"),
    (4, "b", "i2", "purchase", DASH_T0 + DAY_MS + 1 * HOUR_MS, 7.5, None),
    (5, "b", "i2", "click", DASH_T0 + DAY_MS + 2 * HOUR_MS, None, "r2"),
    (6, "c", "i1", "purchase", DASH_T0 + 2 * DAY_MS + 1 * HOUR_MS, 2.0, None),
    (7, "c", "i3", "purchase", DASH_T0 + 2 * DAY_MS + 2 * HOUR_MS, 1.0, None),
]
END = DASH_T0 + 3 * DAY_MS


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


DashboardPlant = tuple[Store, DashboardReads, Records]


class DashboardReadsConformance:
    """The dashboard's reads of planted events and lists; subclasses provide
    ``open_records(tmp_path)`` as for ``RecordsConformance``."""

    def open_records(self, tmp_path: Path) -> Records:
        raise NotImplementedError

    @pytest.fixture
    def planted(self, tmp_path: Path) -> Iterator[DashboardPlant]:
        records = self.open_records(tmp_path)
        store = records.store()
        store.append_events(_frame(PLANTED))
        store.append_events(_undated(100))
        reads = records.dashboard()
        yield store, reads, records
        reads.close()
        store.close()

    def test_daily_counts_of_every_event_match_the_planted_ones(
        self, planted: DashboardPlant
    ) -> None:
        _, reads, _ = planted
        rows, undated = reads.daily_counts_all(END)
        assert _cells(rows) == _expected_cells(0, END)
        assert _cells(rows)[(DAY0, "view")] == (2, 1, None, DASH_T0 + 2 * HOUR_MS)
        assert _cells(rows)[(DAY0 + 2, "purchase")] == (
            2,
            0,
            3.0,
            DASH_T0 + 2 * DAY_MS + 2 * HOUR_MS,
        )
        assert undated == 1
        before_last_day, _ = reads.daily_counts_all(DASH_T0 + 2 * DAY_MS)  # the bound is exclusive
        assert _cells(before_last_day) == _expected_cells(0, DASH_T0 + 2 * DAY_MS)

    def test_daily_counts_of_a_range_come_with_their_check_only_when_asked(
        self, planted: DashboardPlant
    ) -> None:
        _, reads, _ = planted
        start = DASH_T0 + DAY_MS
        rows, dated, undated = reads.daily_counts_between(start, END, verify=True)
        assert _cells(rows) == _expected_cells(start, END)
        assert (dated, undated) == (len(PLANTED), 1)
        rows, dated, undated = reads.daily_counts_between(start, DASH_T0 + 2 * DAY_MS, verify=False)
        assert _cells(rows) == _expected_cells(start, DASH_T0 + 2 * DAY_MS)
        assert (dated, undated) == (None, None)
        reads.ensure_daily_index()
        reads.ensure_daily_index()  # a second call changes nothing
        again, _, _ = reads.daily_counts_between(start, DASH_T0 + 2 * DAY_MS, verify=False)
        assert again == rows

    def test_the_change_marker_moves_only_when_another_connection_commits(
        self, planted: DashboardPlant
    ) -> None:
        store, reads, _ = planted
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

    def test_the_last_import_id_follows_the_import_log(self, planted: DashboardPlant) -> None:
        store, reads, _ = planted
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

    def test_purchased_item_counts_take_only_purchases_at_or_after_the_time(
        self, planted: DashboardPlant
    ) -> None:
        _, reads, _ = planted
        since = DASH_T0 + DAY_MS + 1 * HOUR_MS  # exactly the second purchase: it counts
        rows = sorted(reads.purchased_item_counts(since, limit=100))
        assert rows == [
            ("i1", 1, DASH_T0 + 2 * DAY_MS + 1 * HOUR_MS, DASH_T0 + 2 * DAY_MS + 1 * HOUR_MS),
            ("i2", 1, since, since),
            ("i3", 1, DASH_T0 + 2 * DAY_MS + 2 * HOUR_MS, DASH_T0 + 2 * DAY_MS + 2 * HOUR_MS),
        ]
        latest = reads.purchased_item_counts(0, limit=1)
        assert latest == [
            ("i3", 1, DASH_T0 + 2 * DAY_MS + 2 * HOUR_MS, DASH_T0 + 2 * DAY_MS + 2 * HOUR_MS)
        ]
        everything = {item: n for item, n, _, _ in reads.purchased_item_counts(0, limit=100)}
        assert everything == {"i1": 2, "i2": 1, "i3": 1}

    def test_exposed_item_counts_cover_the_latest_shown_lists(
        self, planted: DashboardPlant
    ) -> None:
        _, reads, records = planted
        table = records.exposures()

        def served(rec: str, shown: int, at: int, items: list[str]) -> None:
            exposure = (
                rec,
                "u1",
                None,
                "home",
                "recommend",
                "v0001",
                shown,
                None,
                0,
                at,
                len(items),
            )
            rows = [(rec, i + 1, item, 1.0, "u1") for i, item in enumerate(items)]
            table.append([exposure], rows, [])

        served("rec-1", 1, 1_000, ["i1", "i2"])
        served("rec-2", 1, 2_000, ["i1", "i3"])
        served("rec-3", 0, 3_000, ["i4"])  # a shadow list, never shown
        table.close()
        assert reads.exposed_item_counts(10) == {"i1": 2, "i2": 1, "i3": 1}
        assert reads.exposed_item_counts(1) == {"i1": 1, "i3": 1}
