"""The outcome reader: served lists and what followed them, read back from a real store with a
planted truth (which events are direct outcomes, which purchases are view-throughs, what the
bandit counts)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nextbuy.experiments.attribution import attribute
from nextbuy.store.outcomes import OutcomeReader, open_outcome_reader
from nextbuy.store.records import open_exposure_table
from nextbuy.store.sqlite import SQLiteStore

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


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """u1 is shown r1 and, an hour later, r2 (both hold i1) in variant a; u2 is shown r3 in
    variant b (shuffled, on pdp) with the shadow list s1 computed beside it."""
    path = tmp_path / "store.sqlite"
    store = SQLiteStore(path)
    store.upsert_users(
        pd.DataFrame({"user_id": ["u1", "u2"], "attributes": [{"region": "n"}, {"region": "s"}]})
    )
    lists = [
        served("r1", "u1", T0, ["i1", "i2"], "a"),
        served("r2", "u1", T0 + HOUR, ["i1", "i3"], "a"),
        served("r3", "u2", T0, ["i4", "i5"], "b", placement="pdp", shuffled=1),
        served("s1", "u2", T0, ["i4", "i6"], "shadow", shown=0, shadow_of="r3"),
    ]
    table = open_exposure_table(path)
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
    store.append_events(pd.DataFrame(events))
    store.close()
    return path


@pytest.fixture
def reader(store_path: Path) -> OutcomeReader:
    return open_outcome_reader(store_path)


def test_events_sent_with_a_shown_lists_id_are_its_direct_outcomes(reader: OutcomeReader) -> None:
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
    reader: OutcomeReader,
) -> None:
    late = reader.experiment_outcomes("exp", DAY).view_through
    # every list that showed i1 to u1 is a candidate; the late i3 purchase and u3's are not
    assert sorted(late["recommendation_id"]) == ["r1", "r2"]
    assert set(late["item_id"]) == {"i1"} and set(late["value"]) == {10.0}
    # r2 was served exactly an hour before the purchase: the window's end is inside it
    assert list(reader.experiment_outcomes("exp", HOUR).view_through["recommendation_id"]) == ["r2"]
    none = reader.experiment_outcomes("exp", 0).view_through
    assert none.empty and list(none.columns) == list(late.columns)


def test_attribution_gives_a_view_through_to_the_latest_list(store_path: Path) -> None:
    data = attribute(store_path, "exp", view_through_hours=24.0)
    late = data.events[data.events["how"] == "view_through"]
    assert list(late["recommendation_id"]) == ["r2"]
    u1 = data.per_unit().set_index("variant").loc["a"]
    assert u1[["impressions", "clicks", "orders", "revenue"]].tolist() == [2.0, 2.0, 1.0, 10.0]


def test_bandit_counts_count_shown_lists_not_events(reader: OutcomeReader) -> None:
    successes, trials = reader.bandit_counts("exp", "click")
    assert trials == {"a": 2.0, "b": 1.0}  # the shadow list is no trial
    assert successes == {"a": 1.0}  # r1 clicked twice is one success; s1's click is none
    assert reader.bandit_counts("exp", "purchase") == ({"b": 1.0}, trials)
    assert reader.bandit_counts("other", "click") == ({}, {})


def test_shadow_lists_are_read_with_the_lists_they_shadow(reader: OutcomeReader) -> None:
    read = reader.shadow_lists("exp")
    assert read.lists[["recommendation_id", "shadow_of", "variant"]].values.tolist() == [
        ["s1", "r3", "shadow"]
    ]
    assert list(read.shown["recommendation_id"]) == ["r3"]
    assert len(read.items) == 8  # the items of all four lists
    acted = read.acted.sort_values("ts")
    assert acted[["item_id", "event_type"]].values.tolist() == [["i6", "click"], ["i5", "purchase"]]
    assert reader.shadow_lists("other").lists.empty


def test_click_logs_hold_each_item_of_a_shown_list(reader: OutcomeReader) -> None:
    logs = reader.click_logs(None, None, None)
    assert sorted(logs["recommendation_id"].unique()) == ["r1", "r2", "r3"]
    clicked = logs[logs["clicked"] == 1]
    assert clicked[["recommendation_id", "item_id"]].values.tolist() == [["r1", "i1"]]
    assert logs["variant"].isna().all()
    shuffled = reader.click_logs(None, "exp", True)
    assert set(shuffled["recommendation_id"]) == {"r3"} and set(shuffled["variant"]) == {"b"}
    assert set(reader.click_logs(T0 + 1, None, None)["recommendation_id"]) == {"r2"}


def test_served_performance_groups_item_impressions_and_direct_outcomes(
    reader: OutcomeReader,
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


def test_segment_sources_and_logged_positions(reader: OutcomeReader) -> None:
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
