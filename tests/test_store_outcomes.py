"""Attribution reads the outcomes of a real SQLite store by its path: a purchase of a shown
item within the window goes to the latest list that showed it."""

from __future__ import annotations

from pathlib import Path

from nextbuy.experiments.attribution import attribute
from store_conformance import plant_outcomes
from test_store_conformance import sqlite_records


def test_attribution_gives_a_view_through_to_the_latest_list(tmp_path: Path) -> None:
    plant_outcomes(sqlite_records(tmp_path))
    store_path = tmp_path / "store.sqlite"
    data = attribute(store_path, "exp", view_through_hours=24.0)
    late = data.events[data.events["how"] == "view_through"]
    assert list(late["recommendation_id"]) == ["r2"]
    u1 = data.per_unit().set_index("variant").loc["a"]
    assert u1[["impressions", "clicks", "orders", "revenue"]].tolist() == [2.0, 2.0, 1.0, 10.0]
