"""The request's device reaches the ranker: a hybrid trained on events that name their device
answers `?device=mobile` and `?device=desktop` with the lists each device's visits lead to,
over HTTP from a real server process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from context_shop import CHEAP_ITEMS, device_shop
from nextbuy.config import load_settings
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.store import open_store
from nextbuy.store.registry import ModelRegistry
from nextbuy.training import train_version
from serving_helpers import recommend, running_api

pytestmark = pytest.mark.integration

CONFIG = """\
data_dir = "data"
[training]
model = "hybrid"
exclude_seen = false
[training.params.hybrid]
protocol = "repeat"
label_days = 15
label_windows = 3
embeddings = "none"
ranker_params = { n_estimators = 60 }
generators = [
    { name = "trending", n = 60 },
    { name = "itemknn", n = 60 },
]
# the home placement caps each category at 3 of 10: a list without rules shows the ranking
[placements.plain]
k = 10
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("devices")
    (root / "nextbuy.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_settings(root / "nextbuy.toml")
    events, items = device_shop()
    events["timestamp"] = events["timestamp"].astype("int64") // 10**6  # unix ms, as exported
    store = open_store(settings.store_path)
    try:
        for kind, frame in (("items", items), ("interactions", events)):
            import_frame(store, settings, frame, f"devices:{kind}", ImportOptions(kind))
        outcome = train_version(settings, store)
    finally:
        store.close()
    if not outcome.promoted:  # the gate's verdict is not what this test is about
        ModelRegistry(settings.models_dir).promote(outcome.version.name, "context test")
    with running_api(root) as client:
        yield client


def dear_share(api: httpx.Client, device: str) -> float:
    params = {"placement": "plain", "device": device}
    listed = [
        int(item["item_id"][1:]) >= CHEAP_ITEMS
        for user in ("u1", "u2", "u3", "u4", "u5")
        for item in recommend(api, f"/v1/users/{user}/recommendations", **params)["items"]
    ]
    return sum(listed) / len(listed)


def test_the_device_of_the_request_changes_the_list(api: httpx.Client) -> None:
    mobile, desktop = dear_share(api, "mobile"), dear_share(api, "desktop")
    assert mobile < 0.3 and desktop > 0.7, (mobile, desktop)
