"""The REST API over real HTTP against a `nextbuy serve` process on a slice of the sample shop.

One project and one server for the module (building and training take ~10 s); tests that
change state use users, sessions and items of their own. The API-key test runs last: once a
key exists, every route needs one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nextbuy.config import Settings
from serving_helpers import (
    CHEAP,
    Server,
    build_project,
    ids,
    items_table,
    nextbuy,
    recommend,
    trained_users,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    root = tmp_path_factory.mktemp("shop")
    return root, build_project(root)


@pytest.fixture(scope="module")
def server(project: tuple[Path, Settings]) -> Iterator[Server]:
    running = Server(project[0]).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def partners(api: httpx.Client, item: str) -> set[str]:
    body = recommend(api, f"/v1/items/{item}/bought-together", k=10)
    return {i["item_id"] for i in body["items"] if i["reason"].startswith("bought together")}


# -- every response ---------------------------------------------------------------------------
def test_a_recommendation_response_carries_id_version_placement_and_explained_items(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    user = trained_users(project[1], 1)[0]
    body = recommend(api, f"/v1/users/{user}/recommendations", k=7)
    assert len(body["recommendation_id"]) == 32 and body["model_version"] == "v0001"
    assert body["placement"] == "home" and len(body["items"]) == 7
    assert [i["position"] for i in body["items"]] == list(range(1, 8))
    assert all(i["title"] and i["reason"] and 0 <= i["score"] <= 1 for i in body["items"])
    assert any(i["reason"].startswith("because you bought ") for i in body["items"])
    assert len(set(ids(body))) == 7


def test_every_route_answers_on_the_documented_score_scale(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    user = trained_users(project[1], 4)[3]
    item = ids(recommend(api, "/v1/trending", k=1))[0]
    bodies = [
        recommend(api, f"/v1/users/{user}/recommendations", k=10, placement=placement)
        for placement in ("home", "email", "garden", "product_page")
    ]
    bodies += [
        recommend(api, "/v1/trending", k=10),
        recommend(api, f"/v1/items/{item}/similar", k=10),
        recommend(api, f"/v1/items/{item}/bought-together", k=10),
        recommend(api, f"/v1/users/{user}/buy-again", k=10),
        api.post("/v1/recommendations/cart", json={"items": [item], "k": 6}).json(),
        api.post("/v1/rerank", json={"user_id": user, "items": ids(bodies[0])}).json(),
    ]
    for body in bodies:
        scores = [i["score"] for i in body["items"] if i["score"] is not None]
        assert scores, body["placement"]
        assert all(0 <= s <= 1 for s in scores), body["placement"]
        assert scores == sorted(scores, reverse=True), body["placement"]


# -- events change the next answer ------------------------------------------------------------
def test_an_anonymous_purchase_leaves_the_list_and_brings_its_complements(
    api: httpx.Client,
) -> None:
    item = "85123A"  # the best seller: plenty of baskets to learn its partners from
    goes_with = partners(api, item)
    assert goes_with
    accepted = api.post(
        "/v1/events", json={"session_id": "anon-1", "item_id": item, "event_type": "purchase"}
    )
    assert accepted.status_code == 200 and accepted.json()["stored"] == 1
    body = recommend(api, "/v1/sessions/anon-1/recommendations", k=10)
    assert item not in ids(body)
    assert goes_with & set(ids(body))
    assert any(i["reason"] == "goes with WHITE HANGING HEART T-LIGHT HOLDER" for i in body["items"])


def test_a_trained_users_purchase_changes_their_very_next_list(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    user = trained_users(project[1], 3)[1]
    before = recommend(api, f"/v1/users/{user}/recommendations", k=10)
    bought = ids(before)[0]
    goes_with = partners(api, bought)
    response = api.post(
        "/v1/events",
        json={"events": [{"user_id": user, "item_id": bought, "event_type": "purchase"}]},
    )
    assert response.status_code == 200
    after = recommend(api, f"/v1/users/{user}/recommendations", k=10)
    assert bought not in ids(after)
    assert ids(after) != ids(before)
    assert not goes_with or goes_with & set(ids(after))


def test_events_are_stored_before_the_answer_and_a_resent_event_counts_once(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    event = {"user_id": "resender", "item_id": "22423", "event_type": "view", "event_id": "e-1"}
    first = api.post("/v1/events", json=event).json()
    second = api.post("/v1/events", json=event).json()
    assert (first["stored"], second["stored"], second["duplicates"]) == (1, 0, 1)
    with sqlite3.connect(project[1].store_path) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM events WHERE user_id = 'resender'").fetchone()
    assert stored[0] == 1


def test_a_batch_with_one_bad_event_is_refused_whole_with_reasons_per_event(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    batch = {
        "events": [
            {"user_id": "batcher", "item_id": "22423", "event_type": "view"},
            {"user_id": "batcher", "item_id": "22423", "event_type": "teleport"},
            {"item_id": "22423", "event_type": "view"},
            {"user_id": "batcher", "item_id": "22423", "event_type": "view", "timestamp": "soon"},
        ]
    }
    response = api.post("/v1/events", json=batch)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail] == [
        ["body", "events", 1, "event_type"],
        ["body", "events", 2, "user_id"],
        ["body", "events", 3, "timestamp"],
    ]
    assert "unknown event type 'teleport'" in detail[0]["msg"]
    assert detail[1]["msg"] == "missing user_id (and no session_id)"
    with sqlite3.connect(project[1].store_path) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM events WHERE user_id = 'batcher'").fetchone()
    assert stored[0] == 0


# -- rules ------------------------------------------------------------------------------------
def test_no_response_of_a_filtered_placement_breaks_its_rules(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    settings = project[1]
    items = items_table(settings)
    api.post(
        "/v1/events", json={"session_id": "rules-s", "item_id": "85123A", "event_type": "view"}
    )
    paths = [f"/v1/users/{u}/recommendations" for u in trained_users(settings, 25)]
    paths += ["/v1/users/nobody-at-all/recommendations", "/v1/sessions/rules-s/recommendations"]
    answered = 0
    for path in paths:
        body = recommend(api, path, placement="garden", k=8)
        assert body["placement"] == "garden" and len(body["items"]) <= 8
        brands = Counter()
        for item in body["items"]:
            row = items.loc[item["item_id"]]
            assert row["category"].startswith("Garden > "), (path, item)
            assert row["price"] <= CHEAP, (path, item)
            brands[row["brand"]] += 1
        assert max(brands.values(), default=0) <= 3
        answered += len(body["items"])
    assert answered > 0


def test_rules_reload_without_restart_through_the_api_and_the_file(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    config = project[0] / "nextbuy.toml"
    original = config.read_text()
    assert api.get("/v1/trending", params={"placement": "kitchen"}).status_code == 422
    try:
        config.write_text(
            original + '\n[placements.kitchen]\nk = 4\nrules = [{ type = "categories", include = '
            '["Kitchen"] }]\n'
        )
        assert api.post("/v1/admin/reload-rules").status_code == 200
        body = recommend(api, "/v1/trending", placement="kitchen")
        items = items_table(project[1])
        assert len(body["items"]) == 4
        assert all(items.loc[i, "category"].startswith("Kitchen") for i in ids(body))
        # an edit of the file alone is picked up within about a second
        config.write_text(original + "\n[placements.lamps]\nk = 3\nrules = []\n")
        deadline = time.monotonic() + 10
        while api.get("/v1/trending", params={"placement": "lamps"}).status_code != 200:
            assert time.monotonic() < deadline, "rules file change not picked up"
            time.sleep(0.2)
        # a broken file changes nothing
        config.write_text(original + "\n[placements.broken]\nk = 0\n")
        assert api.post("/v1/admin/reload-rules").status_code == 422
        assert api.get("/v1/trending", params={"placement": "lamps"}).status_code == 200
    finally:
        config.write_text(original)
        api.post("/v1/admin/reload-rules")


# -- catalogue ---------------------------------------------------------------------------------
def test_a_new_item_is_recommendable_at_once_and_a_deleted_one_never_again(
    api: httpx.Client,
) -> None:
    # a category of its own, so no diversity cap of the home placement can drop it
    new = {"title": "Solar garden lantern", "category": "Outdoor > Lights", "price": 4.5}
    assert api.put("/v1/items/NEW-LANTERN", json=new).status_code == 200
    trending = recommend(api, "/v1/trending", k=10)
    assert "NEW-LANTERN" in ids(trending)
    assert {"new arrival"} == {
        i["reason"] for i in trending["items"] if i["item_id"] == "NEW-LANTERN"
    }
    cold = recommend(api, "/v1/users/first-visit/recommendations", k=10)
    assert "NEW-LANTERN" in ids(cold)
    assert api.delete("/v1/items/NEW-LANTERN").status_code == 204
    popular = next(i for i in ids(recommend(api, "/v1/trending", k=10)) if i != "85123A")
    assert api.delete(f"/v1/items/{popular}").status_code == 204
    for path in ("/v1/trending", "/v1/users/first-visit/recommendations"):
        assert not {"NEW-LANTERN", popular} & set(ids(recommend(api, path, k=50)))
    assert api.delete("/v1/items/NEVER-EXISTED").status_code == 404


# -- cold start, consent, onboarding -----------------------------------------------------------
def test_cold_start_uses_the_page_category_and_onboarding_answers(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    items = items_table(project[1])
    body = recommend(api, "/v1/users/stranger/recommendations", category="toys", k=6)
    toys = [items.loc[i, "category"].startswith("Toys > ") for i in ids(body)]
    # the page's category leads; home's diversity rule (3 per category) lets in others
    assert len(body["items"]) == 6 and toys == [True] * 3 + [False] * 3
    assert {i["reason"] for i in body["items"][:3]} == {"popular in Toys"}
    profile = {"onboarding": {"categories": ["Lighting"], "price_max": 3.0}}
    assert api.put("/v1/users/newbie", json=profile).status_code == 200
    body = recommend(api, "/v1/users/newbie/recommendations", k=5)
    first = ids(body)[:3]
    assert all(items.loc[i, "category"].startswith("Lighting > ") for i in first)
    assert all(items.loc[i, "price"] <= 3.0 for i in first)
    assert {i["reason"] for i in body["items"][:3]} == {"popular in Lighting"}


def test_a_user_without_consent_gets_non_personal_lists(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    user = trained_users(project[1], 5)[4]
    personal = recommend(api, f"/v1/users/{user}/recommendations", k=10)
    assert any(i["reason"].startswith("because you") for i in personal["items"])
    assert api.put(f"/v1/users/{user}", json={"consent": False}).status_code == 200
    body = recommend(api, f"/v1/users/{user}/recommendations", k=10)
    assert body["items"] and not any(i["reason"].startswith("because") for i in body["items"])
    assert ids(body) == ids(recommend(api, "/v1/users/someone-new/recommendations", k=10))
    assert recommend(api, f"/v1/users/{user}/buy-again")["items"] == []


# -- other routes -------------------------------------------------------------------------------
def test_cart_cross_sell_rerank_and_buy_again(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    cart = api.post("/v1/recommendations/cart", json={"items": ["85123A", "22423"], "k": 6})
    assert cart.status_code == 200
    body = cart.json()
    assert body["placement"] == "cart" and 0 < len(body["items"]) <= 6
    assert not {"85123A", "22423"} & set(ids(body))
    user = trained_users(project[1], 3)[2]
    mine = ids(recommend(api, f"/v1/users/{user}/recommendations", k=5))
    mixed = ["NOT-AN-ITEM", mine[4], "ALSO-UNKNOWN", mine[0], mine[2]]
    reranked = api.post("/v1/rerank", json={"user_id": user, "items": mixed}).json()
    order = ids(reranked)
    assert order[-2:] == ["NOT-AN-ITEM", "ALSO-UNKNOWN"]
    assert sorted(order) == sorted(mixed)
    scored = [i["score"] for i in reranked["items"][:3]]
    assert scored == sorted(scored, reverse=True) and None not in scored
    again = recommend(api, f"/v1/users/{user}/buy-again", k=5)
    assert again["items"] and all(i["reason"].startswith("you bought it") for i in again["items"])


# -- erasure -------------------------------------------------------------------------------------
def test_erasure_removes_the_user_from_every_table_and_from_memory(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    settings = project[1]
    user = trained_users(settings, 8)[7]
    api.put(f"/v1/users/{user}", json={"attributes": {"tier": "gold"}})
    api.post(
        "/v1/events",
        json={
            "user_id": user,
            "session_id": "erase-s",
            "item_id": "85123A",
            "event_type": "add_to_cart",
        },
    )
    before = recommend(api, f"/v1/users/{user}/recommendations", k=10)
    assert any(i["reason"].startswith(("because you", "goes with")) for i in before["items"])
    assert api.delete(f"/v1/users/{user}").status_code == 204
    with sqlite3.connect(settings.store_path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                found = conn.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE CAST({column} AS TEXT) = ?", (user,)
                ).fetchone()[0]
                assert found == 0, (table, column)
    after = recommend(api, f"/v1/users/{user}/recommendations", k=10)
    cold = recommend(api, "/v1/users/never-seen/recommendations", k=10)
    assert ids(after) == ids(cold)
    assert recommend(api, f"/v1/users/{user}/buy-again")["items"] == []
    session = recommend(api, "/v1/sessions/erase-s/recommendations", k=10)
    assert ids(session) == ids(cold)


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_gets_a_clear_4xx_and_never_internal_details(api: httpx.Client) -> None:
    missing = api.get("/v1/items/NO-SUCH-ITEM/similar")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "item 'NO-SUCH-ITEM' not found"}
    assert api.get("/v1/items/NO-SUCH-ITEM/bought-together").status_code == 404
    assert recommend(api, "/v1/users/ghost-user/recommendations")["items"]
    malformed = api.post(
        "/v1/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == ["body"]
    wrong_k = api.get("/v1/users/u/recommendations", params={"k": "many"})
    assert wrong_k.status_code == 422 and wrong_k.json()["detail"][0]["loc"] == ["query", "k"]
    bad_cart = api.post("/v1/recommendations/cart", json={"items": []})
    assert bad_cart.status_code == 422 and bad_cart.json()["detail"][0]["loc"] == ["body", "items"]
    unknown_placement = api.get("/v1/trending", params={"placement": "nope"})
    assert unknown_placement.status_code == 422
    huge = api.post(
        "/v1/events",
        content=b"[" + b"1," * 600_000 + b"1]",
        headers={"content-type": "application/json"},
    )
    assert huge.status_code == 413
    for response in (missing, malformed, wrong_k, huge):
        assert "Traceback" not in response.text and "/src/" not in response.text


def test_operations_routes(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json()["status"] == "ready"
    metrics = api.get("/metrics").text
    for name in (
        "nextbuy_http_requests_total",
        "nextbuy_http_request_seconds_bucket",
        'nextbuy_events_ingested_total{event_type="purchase"}',
        'nextbuy_model_info{model="ease",version="v0001"} 1.0',
        "nextbuy_cold_start_fallbacks_total",
    ):
        assert name in metrics, name
    assert 'route="/v1/users/{user_id}/recommendations"' in metrics
    schema = api.get("/openapi.json").json()
    assert "/v1/events" in schema["paths"] and "EventBatch" in schema["components"]["schemas"]
    assert api.get("/docs").status_code == 200


# -- model hot swap --------------------------------------------------------------------------------
def test_a_model_swap_under_load_fails_no_request(
    api: httpx.Client, project: tuple[Path, Settings], server: Server
) -> None:
    users = [*trained_users(project[1], 40), "cold-1", "cold-2"]
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            i = 0
            while not stop.is_set():
                response = client.get(f"/v1/users/{users[i % len(users)]}/recommendations")
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()["model_version"]] += 1
                i += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for version in ("v0002", "v0001"):
            assert nextbuy(project[0], "models", "promote", version).returncode == 0
            deadline = time.monotonic() + 60
            while api.get("/readyz").json().get("model_version") != version:
                assert time.monotonic() < deadline, f"{version} never swapped in"
                time.sleep(0.2)
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert set(statuses) == {200}, statuses
    assert versions["v0001"] > 0 and versions["v0002"] > 0


# -- API keys (last: once a key exists every route needs one) --------------------------------------
def test_keys_and_scopes_are_enforced_once_a_key_exists(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    root = project[0]
    refused = nextbuy(root, "serve", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 2 and "no API key exists" in refused.stderr
    assert api.get("/v1/trending").status_code == 200  # development mode: open
    made = nextbuy(root, "keys", "create", "--name", "ops", "--scope", "admin")
    assert made.returncode == 0, made.stderr
    keys = {"ops": made.stdout.strip()}
    admin = {"X-API-Key": keys["ops"]}
    try:
        deadline = time.monotonic() + 10
        while api.get("/v1/trending", headers=admin).status_code != 200:
            assert time.monotonic() < deadline, "the new key was not noticed"
            time.sleep(0.2)
        for name, scopes in (("shop", ["read"]), ("tracker", ["write"])):
            created = api.post(
                "/v1/admin/keys", headers=admin, json={"name": name, "scopes": scopes}
            )
            assert created.status_code == 201
            keys[name] = created.json()["key"]
        with sqlite3.connect(project[1].store_path) as conn:
            stored = " ".join(str(r) for r in conn.execute("SELECT * FROM serving_api_keys"))
        assert all(key.split("_", 2)[2] not in stored for key in keys.values())
        event = {"user_id": "k-user", "item_id": "22423", "event_type": "view"}

        def status(method: str, path: str, key: str | None, bearer: bool = False, **kw) -> int:
            headers = {}
            if key:
                headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
            return api.request(method, path, headers=headers, **kw).status_code

        assert status("GET", "/healthz", None) == 200
        assert status("GET", "/readyz", None) == 200
        assert status("GET", "/v1/trending", None) == 401
        assert status("GET", "/v1/trending", "nbk_0000_forged") == 401
        assert status("GET", "/v1/trending", keys["shop"]) == 200
        assert status("GET", "/v1/trending", keys["shop"], bearer=True) == 200
        assert status("POST", "/v1/events", keys["shop"], json=event) == 403
        assert status("POST", "/v1/events", keys["tracker"], json=event) == 200
        assert status("GET", "/v1/trending", keys["tracker"]) == 403
        assert status("POST", "/v1/admin/reload-rules", keys["shop"]) == 403
        assert status("POST", "/v1/admin/reload-rules", keys["ops"]) == 200
        assert status("GET", "/metrics", None) == 401
        assert status("GET", "/v1/users/x/recommendations", keys["ops"]) == 200
        assert status("DELETE", "/v1/admin/keys/shop", keys["ops"]) == 204
        assert status("GET", "/v1/trending", keys["shop"]) == 401
        listed = nextbuy(root, "keys", "list")
        assert "tracker" in listed.stdout and "shop" not in listed.stdout
        assert keys["tracker"] not in listed.stdout
    finally:
        api.delete("/v1/admin/keys/tracker", headers=admin)
        nextbuy(root, "keys", "revoke", "ops")
