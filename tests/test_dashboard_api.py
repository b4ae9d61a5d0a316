"""The dashboard's JSON endpoints, log-in and aggregates, without a browser.

One in-process app on a slice of the bundled sample with a short simulated traffic run
(lists under a running experiment, clicks, add-to-carts and purchases sent back with their
recommendation_id); the aggregate tests use a bare store with events at known times.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from dashboard_helpers import build_shop, known_users
from nextbuy.dashboard.aggregates import DAY_MS, EventAggregates
from nextbuy.dashboard.telemetry import quantile
from nextbuy.dashboard.traffic import simulate_traffic
from nextbuy.dashboard.views import events_over_time, gaps
from nextbuy.server.app import create_app
from nextbuy.serving.keys import KeyStore
from nextbuy.store.sqlite import SQLiteStore

JSON_PATHS = (
    "/v1/dashboard/overview",
    "/v1/dashboard/business",
    "/v1/dashboard/quality",
    "/v1/dashboard/experiments",
    "/v1/dashboard/data",
    "/v1/dashboard/explore/search",
    "/v1/dashboard/explore/users/{user_id}",
    "/v1/dashboard/explore/items/{item_id}",
)


@dataclass
class Shop:
    client: TestClient
    admin: dict[str, str]
    read: dict[str, str]
    users: list[str]
    sent: dict[str, Any]

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.client.get(path, params=params, headers=self.admin)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    settings = build_shop(tmp_path_factory.mktemp("dashboard-api"), lines=15_000)
    keys = KeyStore(settings.store_path)
    _, admin = keys.create("dashboard", ["admin"])
    _, read = keys.create("storefront", ["read"])
    users = known_users(settings, 20)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.headers.update({"X-API-Key": admin})
        sent = simulate_traffic(client, users)
        client.headers.pop("X-API-Key")
        refreshed = client.post(
            "/v1/dashboard/refresh", params={"audit": "true"}, headers={"X-API-Key": admin}
        )
        assert refreshed.status_code == 200, refreshed.text
        yield Shop(client, {"X-API-Key": admin}, {"X-API-Key": read}, users, sent)


# -- documentation and access -----------------------------------------------------------------
def test_json_endpoints_are_documented_with_response_models(shop: Shop):
    spec = shop.get("/openapi.json")
    for path in JSON_PATHS:
        answer = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"]["$ref"].startswith("#/components/schemas/"), path
    overview = spec["components"]["schemas"]["Overview"]["properties"]
    assert {"requests", "latency", "events_per_day", "model"} <= set(overview)
    assert not [p for p in spec["paths"] if p.startswith("/dashboard")]  # pages are not API


def test_json_needs_the_admin_scope(shop: Shop):
    assert shop.client.get("/v1/dashboard/overview").status_code == 401
    assert shop.client.get("/v1/dashboard/overview", headers=shop.read).status_code == 403
    assert shop.client.get("/v1/dashboard/overview", headers=shop.admin).status_code == 200


def test_pages_redirect_to_the_log_in_form_and_static_files_are_open(shop: Shop):
    client = shop.client
    page = client.get("/dashboard/quality", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/dashboard/login?next=/dashboard/quality"
    form = client.get("/dashboard/login")
    assert form.status_code == 200 and 'name="key"' in form.text
    script = client.get("/dashboard/static/chart.umd.min.js")
    assert script.status_code == 200 and "Chart.js v4" in script.text[:200]
    for outside in ("%2E%2E%2Froutes.py", ".hidden", "no-such.js"):
        assert client.get(f"/dashboard/static/{outside}").status_code == 404


def test_log_in_gives_a_session_cookie_that_opens_only_the_dashboard(shop: Shop):
    client = TestClient(shop.client.app)  # its own cookie jar
    admin_key = shop.admin["X-API-Key"]
    wrong = client.post("/dashboard/login", data={"key": shop.read["X-API-Key"]})
    assert wrong.status_code == 401 and "not an admin API key" in wrong.text
    answer = client.post(
        "/dashboard/login",
        data={"key": admin_key, "next": "https://elsewhere.example/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert admin_key not in cookie
    assert client.get("/v1/dashboard/overview").status_code == 200
    assert client.get("/dashboard", follow_redirects=False).status_code == 200
    assert client.get("/v1/admin/status").status_code == 401  # the cookie is no API key
    client.post("/dashboard/logout")
    assert client.get("/v1/dashboard/overview").status_code == 401


# -- what the pages show ----------------------------------------------------------------------
def test_overview_counts_the_traffic_and_the_events_it_sent(shop: Shop):
    body = shop.get("/v1/dashboard/overview")
    types = {row["event_type"]: row for row in body["event_types"]}
    for kind in ("click", "add_to_cart", "purchase"):
        assert types[kind]["via_api_since_start"] == shop.sent[kind]
    assert types["click"]["attributed"] == shop.sent["click"]
    requests = body["requests"]
    assert requests["requests"] >= shop.sent["lists"] + shop.sent["unknown"]
    assert requests["server_errors"] == 0 and requests["error_rate"] == 0
    assert 0 < requests["p50_ms"] <= requests["p95_ms"] <= requests["p99_ms"]
    assert body["model"]["version"] == "v0001" and body["model"]["model"] == "itemknn"
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert body["events_per_day"]["labels"][-1] == today
    assert not [r for r in body["routes"] if r["route"].startswith(("/v1/admin", "/v1/dash"))]


def test_business_impact_adds_up_to_what_the_traffic_sent(shop: Shop):
    body = shop.get("/v1/dashboard/business")
    totals = body["totals"]
    assert totals["lists"] == shop.sent["lists"] + shop.sent["unknown"]
    assert totals["clicks"] == shop.sent["click"]
    assert totals["purchases"] == shop.sent["purchase"]
    assert math.isclose(totals["revenue"], shop.sent["revenue"], rel_tol=1e-9)
    assert math.isclose(totals["rpm"], 1000 * totals["revenue"] / totals["impressions"])
    placements = {row["placement"] for row in body["by_placement"]}
    assert {"home", "email", "product_page"} <= placements
    positions = [row["position"] for row in body["by_position"]]
    assert positions[0] == 1 and positions == sorted(positions)
    assert sum(row["clicks"] for row in body["by_position"]) == totals["clicks"]
    assert len(body["rates_by_position"]["labels"]) == len(positions)


def test_model_quality_has_every_version_and_live_figures(shop: Shop):
    body = shop.get("/v1/dashboard/quality")
    assert [v["version"] for v in body["versions"]] == ["v0001", "v0002"]
    assert [v["serving"] for v in body["versions"]] == [True, False]
    assert body["history"]["labels"] == ["v0001 itemknn", "v0002 popularity"]
    beyond = body["beyond"]
    assert 0 < beyond["catalog_coverage"] <= 1 and 0 <= beyond["diversity"] <= 1
    assert beyond["grouping"] == "price band"  # the sample has no categories
    cold = body["cold_start"]
    # new visitors in the control arm fell back to trending (the holdout arm never asks)
    assert 0 < cold["fallbacks"]["trending"] <= shop.sent["unknown"]
    assert 0 < cold["share"] < 1
    drift = body["drift"]
    assert drift["recommended_from"] == "latest shown lists"
    assert drift["purchases"] == shop.sent["purchase"]
    assert math.isclose(sum(drift["recommended_share"]), 1.0)
    assert math.isclose(sum(drift["purchased_share"]), 1.0)
    assert 0 <= drift["total_variation"] <= 1


def test_data_page_has_the_audit_freshness_and_gaps(shop: Shop):
    body = shop.get("/v1/dashboard/data")
    fresh = {row["event_type"]: row for row in body["freshness"]}
    assert fresh["click"]["age_seconds"] < 600  # sent a moment ago
    assert fresh["purchase"]["events"] == body["audit"]["events_by_type"]["purchase"]
    assert body["audit"]["events"] == body["events"]
    assert body["gaps"]["days_without_events"] > 0  # the sample's weeks, then today
    assert body["imports"][0]["kind"] == "interactions"


def test_experiment_results_have_intervals_and_traffic_over_time(shop: Shop):
    (experiment,) = shop.get("/v1/dashboard/experiments")["experiments"]
    assert experiment["name"] == "home-holdout" and experiment["status"] == "running"
    assert {v["variant"] for v in experiment["variants"]} == {"control", "trending-only"}
    ctr = experiment["intervals"]["ctr"]
    estimates, bands = ctr["datasets"][0]["data"], ctr["datasets"][1]["data"]
    for value, (low, high) in zip(estimates, bands, strict=True):
        assert low <= value <= high
    assert experiment["traffic_chart"]["labels"]


def test_explore_a_customer_and_an_item(shop: Shop):
    found = shop.get("/v1/dashboard/explore/search", q=shop.users[0][:3])
    assert shop.users[0] in [u["user_id"] for u in found["users"]]
    user = shop.get(f"/v1/dashboard/explore/users/{shop.users[0]}")
    assert user["known"] and user["purchases"]
    lists = {entry["placement"]: entry for entry in user["placements"]}
    assert {"home", "email", "buy_again"} <= set(lists)
    assert all(item["reason"] for entry in lists.values() for item in entry["items"])
    item_id = lists["home"]["items"][0]["item_id"]
    item = shop.get(f"/v1/dashboard/explore/items/{item_id}")
    similar = item["lists"][0]
    assert similar["route"] == "similar" and similar["items"]
    assert similar["items"][0]["reason"].startswith("similar to")
    missing = shop.client.get("/v1/dashboard/explore/items/no-such-item", headers=shop.admin)
    assert missing.status_code == 404


# -- the aggregate ----------------------------------------------------------------------------
def _events(rows: list[tuple[int, str, str, int]]) -> pd.DataFrame:
    """(event_key, user, event_type, ts ms) rows as the store takes them."""
    keys, users, kinds, times = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "event_key": list(keys),
            "user_id": list(users),
            "item_id": "i1",
            "event_type": list(kinds),
            "timestamp": list(times),
            "value": [5.0 if k == "purchase" else None for k in kinds],
        }
    )


def test_events_after_the_mark_are_added_without_a_full_scan(store: SQLiteStore, tmp_path: Path):
    now = int(time.time() * 1000)
    day = now // DAY_MS * DAY_MS
    store.append_events(_events([(1, "a", "view", day - 3 * DAY_MS), (2, "a", "purchase", day)]))
    aggregates = EventAggregates(store.path, tmp_path / "cache.json")
    first = aggregates.refresh(now)
    assert (first.full_scans, first.covered_events) == (1, 2)
    store.append_events(_events([(3, "b", "click", now - 500), (4, "b", "purchase", now - 400)]))
    later = aggregates.refresh(now + 1_000 + 5_000)
    assert (later.full_scans, later.incremental_refreshes) == (1, 1)
    totals = later.by_type()
    assert totals["purchase"].events == 2 and totals["purchase"].revenue == 10.0
    assert later.cells[(day // DAY_MS, "purchase")].events == 2


def test_rows_behind_the_mark_or_erased_rows_force_a_rebuild(store: SQLiteStore, tmp_path: Path):
    now = int(time.time() * 1000)
    store.append_events(_events([(1, "a", "view", now - 10 * DAY_MS)]))
    aggregates = EventAggregates(store.path, tmp_path / "cache.json")
    aggregates.refresh(now)
    store.append_events(_events([(2, "b", "view", now - 20 * DAY_MS)]))  # older history
    after_import = aggregates.refresh(now + 10_000)
    assert after_import.full_scans == 2 and after_import.by_type()["view"].events == 2
    store.erase_user("a")
    after_erasure = aggregates.refresh(now + 20_000)
    assert after_erasure.full_scans == 3 and after_erasure.by_type()["view"].events == 1
    assert after_erasure.covered_events == 1


def test_the_count_check_can_wait_and_still_catches_history(store: SQLiteStore, tmp_path: Path):
    now = int(time.time() * 1000)
    store.append_events(_events([(1, "a", "view", now - DAY_MS)]))
    aggregates = EventAggregates(store.path, tmp_path / "cache.json")
    aggregates.refresh(now)
    store.append_events(_events([(2, "b", "view", now - 3 * DAY_MS), (3, "b", "view", now)]))
    quick = aggregates.refresh(now + 10_000, verify=False)  # the new row only, no count
    assert (quick.full_scans, quick.covered_events) == (1, 2)
    checked = aggregates.refresh(now + 11_000)
    assert (checked.full_scans, checked.covered_events) == (2, 3)


def test_a_restart_reads_the_saved_aggregate_and_only_checks_it(store: SQLiteStore, tmp_path: Path):
    now = int(time.time() * 1000)
    store.append_events(_events([(1, "a", "view", now - DAY_MS), (2, "a", "click", now - 9)]))
    EventAggregates(store.path, tmp_path / "cache.json").refresh(now)
    reopened = EventAggregates(store.path, tmp_path / "cache.json")
    assert reopened.counts.covered_events == 1  # the click was younger than the settle time
    checked = reopened.refresh(now + 10_000)
    assert checked.full_scans == 0 and checked.incremental_refreshes == 1
    assert checked.covered_events == 2


# -- small pieces -----------------------------------------------------------------------------
def test_latency_quantiles_interpolate_inside_buckets():
    from nextbuy.serving.metrics import LATENCY_BUCKETS

    # 100 requests: 50 under 1 ms, 50 between 1 and 2 ms
    cumulative = [0.0] * (len(LATENCY_BUCKETS) + 1)
    for i, bound in enumerate(LATENCY_BUCKETS):
        cumulative[i] = 50.0 if bound == 0.001 else (100.0 if bound > 0.001 else 0.0)
    cumulative[-1] = 100.0
    assert math.isclose(quantile(cumulative, 0.5), 0.001)
    assert math.isclose(quantile(cumulative, 0.75), 0.0015)
    assert math.isnan(quantile([0.0] * len(cumulative), 0.5))


def test_gaps_and_the_folded_time_axis(store: SQLiteStore, tmp_path: Path):
    base = 20_000 * DAY_MS  # 2024-10-04
    days = [0, 1, 3, 40]  # one empty day, then a 36-day hole
    store.append_events(_events([(d + 1, "a", "view", base + d * DAY_MS) for d in days]))
    counts = EventAggregates(store.path, tmp_path / "cache.json").refresh()
    found = gaps(counts)
    assert found["days_in_range"] == 41 and found["days_without_events"] == 37
    assert found["longest_gap_days"] == 36
    assert found["gap_ranges"][0] == ["2024-10-08", "2024-11-12"]
    chart = events_over_time(counts)
    assert chart["labels"][:4] == ["2024-10-04", "2024-10-05", "2024-10-06", "2024-10-07"]
    assert chart["labels"][4] == "2024-10-08 … 2024-11-12 (36 empty days)"
    assert chart["datasets"][0]["data"] == [1, 1, 0, 1, 0, 1]
