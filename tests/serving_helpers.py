"""A small shop project (a slice of the bundled sample) and a real `nextbuy serve` process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd

from nextbuy.config import Settings, load_settings
from nextbuy.datasets import load_sample_shop
from nextbuy.experiments.simulator import ServerProcess as Server
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.store import open_store
from nextbuy.store.registry import ModelRegistry
from nextbuy.training import train_version

INTERACTION_LINES = 60_000  # the sample's first weeks: ~2,500 items, ~1,000 customers
TOPS = ("Garden", "Kitchen", "Lighting", "Toys", "Gifts")
CHEAP = 5.0

CONFIG = """\
data_dir = "nextbuy-data"

[events.custom]
cancellation = 0.0
stock_adjustment = 0.0

[training]
# the sample's customers buy again, so `nextbuy train` would let lists repeat purchases;
# these tests are about lists of what a customer has not had yet
exclude_seen = true
model = "ease"

[placements.garden]
k = 8
rules = [
    { type = "categories", include = ["Garden"] },
    { type = "price_range", max = 5.0 },
    { type = "exclude_purchased" },
    { type = "diversity", max_per_brand = 3 },
]
"""


def category_of(item_id: str) -> str:
    """A planted category per item, so rules have something to hold on to."""
    code = zlib.crc32(item_id.encode())
    return f"{TOPS[code % len(TOPS)]} > Range {code // 7 % 3}"


def brand_of(item_id: str) -> str:
    return f"Brand {zlib.crc32(item_id.encode()) // 11 % 6}"


def build_project(root: Path) -> Settings:
    """nextbuy.toml, a store filled through the importer, and two trained EASE versions
    (v0001 in service, v0002 registered) in `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nextbuy.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_settings(root / "nextbuy.toml")
    shop = load_sample_shop()
    interactions = shop.interactions.iloc[:INTERACTION_LINES]
    items = shop.items[shop.items["item_id"].isin(set(interactions["item_id"]))].copy()
    items["category"] = items["item_id"].map(category_of)
    items["brand"] = items["item_id"].map(brand_of)
    users = shop.users[shop.users["user_id"].isin(set(interactions["user_id"].dropna()))]
    store = open_store(settings.store_path)
    try:
        for kind, frame in (("items", items), ("users", users), ("interactions", interactions)):
            import_frame(store, settings, frame, f"test:{kind}", ImportOptions(kind))
        train_version(settings, store, "ease", {"reg": 300.0})
        train_version(settings, store, "ease", {"reg": 50.0})
    finally:
        store.close()
    ModelRegistry(settings.models_dir).promote("v0001", "tests start on the first version")
    return settings


def nextbuy(project: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nextbuy.cli", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


@contextmanager
def running_api(project: Path) -> Iterator[httpx.Client]:
    """A client of a `nextbuy serve` process on the project, stopped on the way out."""
    server = Server(project).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def trained_users(settings: Settings, n: int) -> list[str]:
    """The first n customers (by id) who bought at least 10 distinct items."""
    with sqlite3.connect(settings.store_path) as conn:
        rows = conn.execute(
            "SELECT user_id FROM events WHERE user_id IS NOT NULL AND event_type = 'purchase' "
            "GROUP BY user_id HAVING COUNT(DISTINCT item_id) >= 10 ORDER BY user_id LIMIT ?",
            (n,),
        ).fetchall()
    return [r[0] for r in rows]


def items_table(settings: Settings) -> pd.DataFrame:
    store = open_store(settings.store_path)
    try:
        return store.items().set_index("item_id")
    finally:
        store.close()


def ids(body: dict) -> list[str]:
    """Item ids of a recommendation response, in order."""
    return [item["item_id"] for item in body["items"]]


def recommend(api: httpx.Client, path: str, **params: object) -> dict:
    """GET a recommendation route and return its body; anything but 200 fails the test."""
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()
