"""A shop project for the dashboard tests: a slice of the bundled sample, item kNN serving.
(The traffic run is nextbuy.dashboard.traffic, which `nextbuy demo` uses as well.)"""

from __future__ import annotations

from pathlib import Path

from nextbuy.config import Settings, load_settings
from nextbuy.datasets import load_sample_shop
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.store import open_store
from nextbuy.store.registry import ModelRegistry
from nextbuy.training import train_version

LINES = 40_000  # the sample's first weeks: enough customers for lists with reasons
CONFIG = """\
data_dir = "nextbuy-data"

[events.custom]
cancellation = 0.0
stock_adjustment = 0.0

[training]
model = "itemknn"

[placements.email]
k = 6
"""


def build_shop(root: Path, lines: int = LINES) -> Settings:
    """nextbuy.toml, the sample's first `lines` interactions with its catalogue and
    customers imported, item kNN trained (v0001, serving) and popularity (v0002)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "nextbuy.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_settings(root / "nextbuy.toml")
    shop = load_sample_shop()
    interactions = shop.interactions.iloc[:lines]
    items = shop.items[shop.items["item_id"].isin(set(interactions["item_id"]))]
    users = shop.users[shop.users["user_id"].isin(set(interactions["user_id"].dropna()))]
    store = open_store(settings.store_path)
    try:
        for kind, frame in (("items", items), ("users", users), ("interactions", interactions)):
            import_frame(store, settings, frame, f"sample:{kind}", ImportOptions(kind))
        train_version(settings, store, "itemknn", {})
        train_version(settings, store, "popularity", {})
    finally:
        store.close()
    # on a thin slice popularity can win the promotion gate: serve item kNN regardless
    ModelRegistry(settings.models_dir).promote("v0001", "the dashboard tests serve item kNN")
    return settings


def known_users(settings: Settings, n: int) -> list[str]:
    """The `n` customers with the most purchase lines, most first."""
    store = open_store(settings.store_path)
    try:
        counts: dict[str, int] = {}
        for batch in store.interactions():
            for user in batch.column("user_id").to_pylist():
                if user is not None:
                    counts[user] = counts.get(user, 0) + 1
    finally:
        store.close()
    return sorted(counts, key=lambda u: -counts[u])[:n]
