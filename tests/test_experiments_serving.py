"""Experiments through the service: assignment, exposure log, attribution, shadow, holdout,
bandit refresh, erasure, the experiment CLI, and a small simulated shop over real HTTP.

One small synthetic shop for the module (two versions: EASE in service, a random model
registered); each test runs its experiment in a layer of its own and stops it at the end,
so tests do not see each other's arms.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from nextbuy.cli import app as cli_app
from nextbuy.experiments.attribution import unit_outcomes
from nextbuy.experiments.business import business_metrics
from nextbuy.experiments.registry import ExperimentRegistry, parse_experiment
from nextbuy.experiments.report import write_report
from nextbuy.experiments.reporting import experiment_results
from nextbuy.experiments.simulator import (
    Behaviour,
    ServerProcess,
    ShopSpec,
    SimulatedShop,
    Visitors,
    build_shop,
    create_experiment,
    results,
    stop_experiment,
    visit_schedule,
)
from nextbuy.server.app import create_app
from nextbuy.serving.exposures import Arm, ExposureLog
from nextbuy.store import open_store

pytestmark = pytest.mark.integration

SPEC = ShopSpec(n_users=300, n_items=120, n_categories=6, n_brands=8, history_events=15_000, seed=3)
MODELS = {"good": ("ease", {"reg": 200.0}), "degraded": ("random", {})}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulatedShop:
    return build_shop(tmp_path_factory.mktemp("simshop"), SPEC, MODELS, bandit_refresh_seconds=0.5)


@pytest.fixture(scope="module")
def api(sim: SimulatedShop) -> Iterator[TestClient]:
    app = create_app(sim.settings)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "model did not load"
            time.sleep(0.1)
        yield client


def returning(sim: SimulatedShop, n: int) -> list[str]:
    return [u for u in sim.shop.user_ids if u not in sim.new_users][:n]


def start(api: TestClient, config: dict) -> dict:
    response = api.post("/v1/admin/experiments", json={**config, "status": "running"})
    assert response.status_code == 201, response.text
    assert response.json()["active"], response.json()
    return response.json()


def stop(api: TestClient, name: str) -> None:
    assert api.post(f"/v1/admin/experiments/{name}/stop").status_code == 200


def home(api: TestClient, user: str, k: int = 6) -> dict:
    response = api.get(f"/v1/users/{user}/recommendations", params={"k": k})
    assert response.status_code == 200, response.text
    return response.json()


def rows(sim: SimulatedShop, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(sim.settings.store_path) as conn:
        return conn.execute(sql, params).fetchall()


def flush(api: TestClient) -> None:
    api.app.state.serving.exposures.flush()


# -- assignment and exposures ---------------------------------------------------------------
def test_a_user_sees_one_variant_consistently_and_each_list_is_logged_with_positions(
    api: TestClient, sim: SimulatedShop
) -> None:
    degraded = sim.versions["degraded"]
    start(
        api,
        {
            "name": "consistent",
            "layer": "l-consistent",
            "variants": [{"name": "a"}, {"name": "b", "model_version": degraded}],
        },
    )
    seen: dict[str, set[str]] = {}
    bodies = []
    for user in returning(sim, 40):
        for _ in range(3):
            body = home(api, user)
            bodies.append(body)
            seen.setdefault(user, set()).add(body["variant"])
            assert body["experiment"] == "consistent"
            expected = degraded if body["variant"] == "b" else sim.versions["good"]
            assert body["model_version"] == expected
    assert all(len(variants) == 1 for variants in seen.values())
    assert {v for variants in seen.values() for v in variants} == {"a", "b"}
    flush(api)
    for body in bodies[:10]:
        rec = body["recommendation_id"]
        logged = rows(
            sim,
            "SELECT position, item_id FROM exposure_items "
            "WHERE recommendation_id = ? ORDER BY position",
            rec,
        )
        assert logged == [(i["position"], i["item_id"]) for i in body["items"]]
        arm = rows(
            sim,
            "SELECT experiment, variant, unit_id, shown FROM exposure_arms "
            "WHERE recommendation_id = ?",
            rec,
        )
        assert arm == [("consistent", body["variant"], f"u:{body['user_id']}", 1)]
        placement = rows(
            sim, "SELECT placement, user_id FROM exposures WHERE recommendation_id = ?", rec
        )
        assert placement == [("home", body["user_id"])]
    stop(api, "consistent")
    assert "experiment" not in home(api, returning(sim, 1)[0])


def test_lists_outside_any_experiment_are_logged_too(api: TestClient, sim: SimulatedShop) -> None:
    body = api.get("/v1/trending", params={"k": 4}).json()
    flush(api)
    found = rows(
        sim,
        "SELECT route, n_items FROM exposures WHERE recommendation_id = ?",
        body["recommendation_id"],
    )
    assert found == [("trending", 4)]
    assert rows(
        sim,
        "SELECT COUNT(*) FROM exposure_arms WHERE recommendation_id = ?",
        body["recommendation_id"],
    ) == [(0,)]


def test_queued_lists_are_plain_rows_that_full_collections_skip(tmp_path: Path) -> None:
    # under full load the writer falls behind; a backlog of tracked objects made every full
    # collection (and the request that set it off) tens of milliseconds slower
    path = tmp_path / "store.db"
    open_store(path).close()
    log = ExposureLog(path)
    for n in range(50):
        items = [{"item_id": f"i{n}", "position": 1, "score": 0.5}]
        body = {"recommendation_id": f"r{n}", "user_id": "u", "placement": "home", "items": items}
        log.record(body, "s", "recommend", (Arm("exp", "a", "u"),))
        items.clear()  # what is queued is the list as it was served
    # a tuple is untracked once its members are: one pass per level, here while the lists
    # age through the two young generations, before they could reach the old one
    gc.collect(0)
    gc.collect(1)
    assert log.pending() == 50
    assert not any(gc.is_tracked(queued) for queued in log._pending)
    assert log.flush() == 50
    tables = ("exposures", "exposure_items", "exposure_arms")
    with sqlite3.connect(path) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables]
        first = [
            conn.execute(f"SELECT * FROM {t} WHERE recommendation_id = 'r0'").fetchall()
            for t in tables[1:]
        ]
    assert counts == [50, 50, 50]
    assert first[0] == [("r0", 1, "i0", 0.5, "u")]
    assert [row[:6] for row in first[1]] == [("exp", "r0", "a", "u", "u", 1)]


# -- attribution ------------------------------------------------------------------------------
def test_clicks_with_the_id_and_view_through_purchases_inside_the_window_are_attributed(
    api: TestClient, sim: SimulatedShop
) -> None:
    start(api, {"name": "attr", "layer": "l-attr", "variants": [{"name": "only"}]})
    user = returning(sim, 60)[-1]
    body = home(api, user)
    rec, items = body["recommendation_id"], [i["item_id"] for i in body["items"]]
    outside = next(str(i) for i in sim.shop.item_ids if str(i) not in items)
    time.sleep(0.05)
    events = [
        {"user_id": user, "item_id": items[0], "event_type": "click", "recommendation_id": rec},
        {
            "user_id": user,
            "item_id": items[0],
            "event_type": "add_to_cart",
            "recommendation_id": rec,
        },
        # bought later without the id: view-through, inside the window
        {
            "user_id": user,
            "item_id": items[1],
            "event_type": "purchase",
            "value": 12.5,
            "quantity": 1,
            "order_id": "o-attr-1",
        },
        # an item that was never shown to this user: not attributed
        {
            "user_id": user,
            "item_id": outside,
            "event_type": "purchase",
            "value": 99.0,
            "quantity": 1,
            "order_id": "o-attr-2",
        },
    ]
    assert api.post("/v1/events", json={"events": events}).status_code == 200
    flush(api)
    path = sim.settings.store_path
    found = unit_outcomes(path, "attr", view_through_hours=1.0).set_index("unit_id")
    mine = found.loc[f"u:{user}"]
    assert (mine["impressions"], mine["clicks"], mine["add_to_carts"]) == (1, 1, 1)
    assert (mine["orders"], mine["revenue"]) == (1, 12.5)
    # the purchase came a few milliseconds after the list: a window of 1 ms leaves it out
    tight = unit_outcomes(path, "attr", view_through_hours=1e-3 / 3600).set_index("unit_id")
    assert tight.loc[f"u:{user}", "orders"] == 0
    assert tight.loc[f"u:{user}", "clicks"] == 1
    stop(api, "attr")


# -- shadow and holdout -----------------------------------------------------------------------
def test_a_shadow_variant_is_computed_and_logged_but_never_shown(
    api: TestClient, sim: SimulatedShop
) -> None:
    degraded = sim.versions["degraded"]
    start(
        api,
        {
            "name": "shadowed",
            "layer": "l-shadow",
            "variants": [
                {"name": "live"},
                {"name": "candidate", "model_version": degraded, "shadow": True},
            ],
        },
    )
    shown = [home(api, u) for u in returning(sim, 15)]
    assert {b["variant"] for b in shown} == {"live"}
    assert {b["model_version"] for b in shown} == {sim.versions["good"]}
    deadline = time.monotonic() + 10
    while True:
        flush(api)
        shadows = rows(
            sim,
            "SELECT x.shadow_of, x.shown, x.model_version, a.variant "
            "FROM exposure_arms a JOIN exposures x USING (recommendation_id) "
            "WHERE a.experiment = 'shadowed' AND a.shown = 0",
        )
        if len(shadows) >= len(shown) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {s[0] for s in shadows} == {b["recommendation_id"] for b in shown}
    assert {(s[1], s[2], s[3]) for s in shadows} == {(0, degraded, "candidate")}
    found = experiment_results(sim.settings.store_path, "shadowed")
    assert set(found.shadow["role"]) == {"shown", "shadow"}
    assert found.summary()["variant"].tolist() == ["live"]  # shadows never count as shown
    stop(api, "shadowed")


def test_the_holdout_gets_the_same_non_personalised_list_as_anyone_else_in_it(
    api: TestClient, sim: SimulatedShop
) -> None:
    start(
        api,
        {
            "name": "held",
            "layer": "l-held",
            "variants": [{"name": "personal"}, {"name": "holdout", "holdout": True}],
        },
    )
    bodies = [home(api, u, k=8) for u in returning(sim, 40)]
    held = [b for b in bodies if b["variant"] == "holdout"]
    personal = [b for b in bodies if b["variant"] == "personal"]
    assert held and personal
    lists = {tuple(i["item_id"] for i in b["items"]) for b in held}
    assert len(lists) == 1  # nothing personal: every holdout user gets the same list
    assert len({tuple(i["item_id"] for i in b["items"]) for b in personal}) > 1
    assert {b["placement"] for b in held} == {"home"}
    assert all(i["reason"] == "trending" for b in held for i in b["items"][:3])
    stop(api, "held")


def test_a_variant_with_its_own_placement_rules_and_pause_resume(
    api: TestClient, sim: SimulatedShop
) -> None:
    short = {"home": {"k": 3, "candidates": 50, "rules": [{"type": "exclude_unavailable"}]}}
    start(
        api,
        {
            "name": "rules",
            "layer": "l-rules",
            "variants": [{"name": "default"}, {"name": "short", "placement_overrides": short}],
        },
    )
    users = returning(sim, 30)
    by_variant: dict[str, set[int]] = {}
    for user in users:
        body = api.get(f"/v1/users/{user}/recommendations").json()  # the placement's own k
        by_variant.setdefault(body["variant"], set()).add(len(body["items"]))
    assert by_variant == {"default": {10}, "short": {3}}
    assert api.post("/v1/admin/experiments/rules/pause").json()["status"] == "paused"
    assert all("variant" not in home(api, u) for u in users[:5])
    assert api.post("/v1/admin/experiments/rules/resume").json()["active"]
    assert all(home(api, u)["experiment"] == "rules" for u in users[:5])
    bad = {
        "name": "bad-rules",
        "layer": "l-bad",
        "status": "running",
        "variants": [{"name": "x", "placement_overrides": {"home": {"k": 0}}}],
    }
    assert api.post("/v1/admin/experiments", json=bad).status_code == 422
    stop(api, "rules")


# -- bandit -----------------------------------------------------------------------------------
def test_thompson_shares_move_to_the_arm_that_gets_the_clicks(
    api: TestClient, sim: SimulatedShop
) -> None:
    start(
        api,
        {
            "name": "bandit",
            "layer": "l-bandit",
            "allocation": "thompson",
            "exploration_floor": 0.1,
            "variants": [{"name": "a"}, {"name": "b"}],
        },
    )
    clicks = []
    for user in returning(sim, 120):
        body = home(api, user, k=3)
        if body["variant"] == "a":  # only arm a's lists are clicked
            clicks.append(
                {
                    "user_id": user,
                    "item_id": body["items"][0]["item_id"],
                    "event_type": "click",
                    "recommendation_id": body["recommendation_id"],
                }
            )
    assert api.post("/v1/events", json={"events": clicks}).status_code == 200
    runtime = api.app.state.serving.experiments
    runtime._last_bandit["bandit"] = 0.0  # due now
    runtime.refresh()
    weights = runtime.plan.weights["bandit"]
    assert weights["a"] > 0.85 and weights["b"] == pytest.approx(0.1)
    history = experiment_results(sim.settings.store_path, "bandit").allocations
    assert history.groupby("computed_at")["weight"].sum().round(6).eq(1).all()
    stop(api, "bandit")


# -- erasure ----------------------------------------------------------------------------------
def test_erasing_a_user_removes_their_exposures(api: TestClient, sim: SimulatedShop) -> None:
    user = returning(sim, 200)[-1]
    start(api, {"name": "erase", "layer": "l-erase", "variants": [{"name": "x"}]})
    home(api, user)
    home(api, user)
    flush(api)
    for table in ("exposures", "exposure_items", "exposure_arms"):
        assert rows(sim, f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", user)[0][0] > 0
    home(api, user)  # still queued when the erasure arrives
    assert api.delete(f"/v1/users/{user}").status_code == 204
    flush(api)
    for table in ("exposures", "exposure_items", "exposure_arms"):
        assert rows(sim, f"SELECT COUNT(*) FROM {table} WHERE user_id = ?", user) == [(0,)]
    stop(api, "erase")


# -- admin errors and configured experiments --------------------------------------------------
def test_invalid_or_clashing_experiments_are_refused_with_a_reason(api: TestClient) -> None:
    bad = api.post("/v1/admin/experiments", json={"name": "x", "variants": []})
    assert bad.status_code == 422
    missing = api.post(
        "/v1/admin/experiments",
        json={
            "name": "ghost",
            "status": "running",
            "layer": "l-ghost",
            "variants": [{"name": "a"}, {"name": "b", "model_version": "v0999"}],
        },
    )
    assert missing.status_code == 422 and "v0999" in missing.json()["detail"]
    ok = {"name": "dupe", "layer": "l-dupe", "variants": [{"name": "a"}]}
    assert api.post("/v1/admin/experiments", json=ok).status_code == 201
    assert api.post("/v1/admin/experiments", json=ok).status_code == 409
    full = {"name": "over", "layer": "l-dupe", "variants": [{"name": "a"}]}
    assert api.post("/v1/admin/experiments", json=full).status_code == 422  # layer booked
    assert api.post("/v1/admin/experiments/dupe/pause").status_code == 422  # a draft


def test_configured_experiments_merge_with_stored_life_cycle_changes(tmp_path: Path) -> None:

    path = tmp_path / "nextbuy.db"
    open_store(path).close()
    configured = [
        parse_experiment(
            {"name": "toml", "status": "running", "variants": [{"name": "a"}, {"name": "b"}]}
        )
    ]
    registry = ExperimentRegistry(path, configured)
    registry.create(
        parse_experiment({"name": "api", "layer": "other", "variants": [{"name": "a"}]})
    )
    assert [e.name for e in registry.all()] == ["toml", "api"]
    registry.change("toml", "stop")
    again = ExperimentRegistry(path, configured).get("toml")
    assert again.status == "stopped" and again.stopped_at is not None
    assert again.variants == configured[0].variants


def test_the_compiled_assigner_agrees_with_assign_all() -> None:
    from nextbuy.experiments.assignment import assign_all
    from nextbuy.serving.assigner import CompiledAssigner

    def experiment(name: str, layer: str, **extra: object) -> object:
        variants = [
            {"name": "a", "weight": 2},
            {"name": "b"},
            {"name": "s", "shadow": True},
            {"name": "h", "holdout": True, "weight": 0.5},
        ]
        return parse_experiment(
            {"name": name, "layer": layer, "status": "running", "variants": variants, **extra}
        )

    experiments = [
        experiment("one", "x", traffic=0.3),
        experiment("two", "x", traffic=0.2, status="paused"),
        experiment("three", "x", traffic=0.4),
        experiment("four", "y", unit="session"),
        experiment("five", "z", allocation="thompson"),
    ]
    weights = {"five": {"a": 0.7, "b": 0.05, "h": 0.25}}
    compiled = CompiledAssigner(experiments, weights)
    for i in range(3_000):
        user = f"user{i}" if i % 4 else None
        session = f"session{i}" if i % 3 else None
        if user is None and session is None:
            with pytest.raises(ValueError):
                compiled.assign(user, session)
            continue
        assert compiled.assign(user, session) == assign_all(experiments, user, session, weights)


# -- the CLI ----------------------------------------------------------------------------------
def test_experiment_cli_creates_lists_and_stops(sim: SimulatedShop, tmp_path: Path) -> None:
    runner = CliRunner()
    config = ["--config", str(sim.root / "nextbuy.toml")]
    degraded = sim.versions["degraded"]
    created = runner.invoke(
        cli_app,
        [
            "experiment",
            "create",
            "--name",
            "cli-test",
            "--layer",
            "l-cli",
            "--variant",
            "control",
            "--variant",
            f"new:{degraded}=3",
            "--holdout",
            "base=1",
            *config,
        ],
    )
    assert created.exit_code == 0, created.output
    listed = runner.invoke(cli_app, ["experiment", "list", *config])
    assert "cli-test" in listed.output and "draft" in listed.output and "60%" in listed.output
    assert runner.invoke(cli_app, ["experiment", "start", "cli-test", *config]).exit_code == 0
    stopped = runner.invoke(cli_app, ["experiment", "stop", "cli-test", *config])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    again = runner.invoke(cli_app, ["experiment", "start", "cli-test", *config])
    assert again.exit_code == 2 and "cannot start" in again.output
    unknown = runner.invoke(cli_app, ["experiment", "stop", "nope", *config])
    assert unknown.exit_code == 2 and "does not exist" in unknown.output


# -- a simulated shop over real HTTP ----------------------------------------------------------
def test_a_small_simulation_over_http_detects_a_planted_difference(
    sim: SimulatedShop, api: TestClient, tmp_path: Path
) -> None:
    api.app.state.serving.exposures.flush()  # the in-process app leaves the store alone now
    with ServerProcess(sim.root) as server:
        # powered for a 50 % lift: the always-valid test is tuned to that many units
        config = {
            "name": "e2e",
            "layer": "l-e2e",
            "min_detectable_effect": 0.5,
            "variants": [
                {"name": "good"},
                {"name": "degraded", "model_version": sim.versions["degraded"]},
            ],
        }
        create_experiment(server.url, config)
        visitors = Visitors(sim, Behaviour(click_scale=0.05))
        report = visitors.run(server.url, visit_schedule(sim, 2.0, seed=1), workers=4)
        assert set(report.variants) == {"good", "degraded"}
        found = results(server.url, "e2e")
        stop_experiment(server.url, "e2e")
        # served just before Ctrl-C: the shutdown writes the exposure log's queue
        last = [httpx.get(f"{server.url}/v1/trending").json()["recommendation_id"]]
    logged = rows(sim, "SELECT COUNT(*) FROM exposures WHERE recommendation_id = ?", last[0])
    assert logged == [(1,)]
    degraded = next(v for v in found["variants"] if v["variant"] == "degraded")
    assert degraded["ctr_lift"] < 0 and degraded["ctr_lift_ci_high"] < 0
    assert degraded["ctr_p_value_always_valid"] < 0.05
    assert found["srm"]["mismatch"] is False
    per_position = business_metrics(sim.settings.store_path, by=("placement", "position"))
    home_rows = per_position[per_position["placement"] == "home"]
    assert home_rows["position"].tolist()[:3] == [1, 2, 3] and home_rows["clicks"].sum() > 0
    html, data = write_report(
        experiment_results(sim.settings.store_path, "e2e"), tmp_path / "e2e.html"
    )
    text = html.read_text()
    assert "<svg" in text and "always-valid" in text and "Lift over time" in text
    assert data.exists()


def test_results_route_needs_the_admin_scope_like_every_admin_route() -> None:
    from nextbuy.serving.auth import required_scope

    assert required_scope("GET", "/v1/admin/experiments/x/results") == "admin"
    assert required_scope("POST", "/v1/admin/experiments") == "admin"
