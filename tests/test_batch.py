"""`nextbuy recommend` (batch) answers what the API answers: same items, same order, same scores,
after consent is withdrawn, a customer is erased, an item goes out of stock or new events come.

A real `nextbuy serve` process takes the changes over HTTP; the batch runs as its own process on
the same project afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from nextbuy.config import Settings
from serving_helpers import (
    CHEAP,
    build_project,
    ids,
    items_table,
    nextbuy,
    recommend,
    running_api,
    trained_users,
)

pytestmark = pytest.mark.integration
K = 10


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    root = tmp_path_factory.mktemp("batch-shop")
    return root, build_project(root)


@pytest.fixture(scope="module")
def api(project: tuple[Path, Settings]) -> Iterator[httpx.Client]:
    with running_api(project[0]) as client:
        yield client


def batch(root: Path, *args: str) -> pd.DataFrame:
    done = nextbuy(root, "recommend", "--k", str(K), "--out", "batch.jsonl", *args, timeout=120)
    assert done.returncode == 0, done.stderr
    return pd.read_json(root / "batch.jsonl", lines=True, dtype={"user_id": str, "item_id": str})


def listed(table: pd.DataFrame, user: str) -> list[tuple[str, float]]:
    mine = table[table["user_id"] == user].sort_values("rank")
    return list(zip(mine["item_id"], mine["score"].round(6), strict=True))


def served(api: httpx.Client, user: str) -> list[tuple[str, float]]:
    body = recommend(api, f"/v1/users/{user}/recommendations", k=K)
    return [(i["item_id"], round(i["score"], 6)) for i in body["items"]]


def test_the_batch_gives_what_the_api_gives_after_consent_erasure_stock_and_new_events(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    root, settings = project
    trained, active, withdrawn, erased, stocked = trained_users(settings, 5)
    before = batch(root, "--users", ",".join((withdrawn, erased, stocked)))
    personal = {u: listed(before, u) for u in (withdrawn, erased, stocked)}

    assert api.put(f"/v1/users/{withdrawn}", json={"consent": False}).status_code == 200
    assert api.delete(f"/v1/users/{erased}").status_code == 204
    out_of_stock = personal[stocked][0][0]
    assert api.put(f"/v1/items/{out_of_stock}", json={"available": False}).status_code == 200
    bought = next(i for i in ids(recommend(api, "/v1/trending", k=K)))
    event = {"user_id": active, "item_id": bought, "event_type": "purchase"}
    assert api.post("/v1/events", json=event).status_code in (200, 202)

    everyone = (trained, active, withdrawn, erased, stocked, "never-seen")
    after = batch(root, "--users", ",".join(everyone), "--placement", "home")
    for user in everyone:
        assert listed(after, user) == served(api, user), user
        assert len(listed(after, user)) == K
    cold = [item for item, _ in listed(after, "never-seen")]
    for user in (withdrawn, erased):
        assert personal[user] != listed(after, user)
        assert [item for item, _ in listed(after, user)] == cold  # nothing personal left
    assert out_of_stock not in {item for item, _ in listed(after, stocked)}
    assert bought not in {item for item, _ in listed(after, active)}  # bought: not shown again


def test_a_batch_of_everyone_leaves_out_erased_customers_and_names_the_placement(
    api: httpx.Client, project: tuple[Path, Settings]
) -> None:
    root, settings = project
    gone = trained_users(settings, 7)[6]
    assert api.delete(f"/v1/users/{gone}").status_code == 204
    everyone = batch(root, "--users", "all")
    assert gone not in set(everyone["user_id"]) and everyone["user_id"].nunique() > 100
    garden = batch(root, "--users", trained_users(settings, 8)[7], "--placement", "garden")
    items = items_table(settings).loc[garden["item_id"]]
    assert len(garden) and items["category"].str.startswith("Garden > ").all()
    assert (items["price"] <= CHEAP).all()  # the garden placement's rules, as configured
    unknown = nextbuy(root, "recommend", "--placement", "nowhere", "--users", gone)
    assert unknown.returncode != 0 and "unknown placement 'nowhere'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
