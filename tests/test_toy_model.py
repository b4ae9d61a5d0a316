"""A model defined here and registered once works everywhere the built-in ones do: trained
by the configured training, served over HTTP by a real server with real-time events and
reasons, listed in batch exactly as served, evaluated, tuned and used as a candidate
generator of the hybrid pipeline, without any other file knowing it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import uvicorn

from nextbuy.config import Settings, load_settings
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.datasets import load_sample_shop
from nextbuy.evaluation import evaluate
from nextbuy.evaluation.splits import temporal_split
from nextbuy.evaluation.tuning import tune
from nextbuy.experiments.simulator import free_port
from nextbuy.hybrid.model import HybridModel
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.models import Recommender, register_model
from nextbuy.server import create_app
from nextbuy.serving.batch import batch_lists
from nextbuy.store import open_store
from nextbuy.store.registry import ModelRegistry
from nextbuy.training import train_version
from serving_helpers import trained_users

LINES = 40_000
K = 8


class CoBought(Recommender):
    """Items scored by how many of the user's items they were bought with (shrunk counts)."""

    name = "toy_cobought"

    def __init__(self, shrink: float = 10.0) -> None:
        super().__init__()
        self.shrink = shrink
        self.together = sp.csr_matrix((0, 0), dtype=np.float32)

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        bought = (data.matrix > 0).astype(np.float32).tocsc()
        counts = (bought.T @ bought).tocsr()
        counts.setdiag(0)
        counts.eliminate_zeros()
        popularity = np.asarray(bought.sum(axis=0)).ravel()
        scale = sp.diags((1.0 / (popularity + self.shrink)).astype(np.float32))
        self.together = (counts @ scale).astype(np.float32).tocsr()

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.asarray((histories @ self.together).todense(), dtype=np.float32)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return self.together[items].toarray()

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        return (self.together[hist][:, targets].toarray().T * weights).astype(np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        m = self.together
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": m.shape}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        shape = tuple(int(n) for n in state["shape"])
        self.together = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape)


register_model(CoBought)


def shop_slice() -> tuple[pd.DataFrame, pd.DataFrame]:
    shop = load_sample_shop()
    events = shop.interactions.iloc[:LINES]
    return events, shop.items[shop.items["item_id"].isin(set(events["item_id"]))]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("toy")
    (root / "nextbuy.toml").write_text(
        'data_dir = "data"\n[events.custom]\ncancellation = 0.0\nstock_adjustment = 0.0\n'
        '[training]\nmodel = "toy_cobought"\nexclude_seen = true\n',
        encoding="utf-8",
    )
    settings = load_settings(root / "nextbuy.toml")
    events, items = shop_slice()
    store = open_store(settings.store_path)
    try:
        for kind, frame in (("items", items), ("interactions", events)):
            import_frame(store, settings, frame, f"toy:{kind}", ImportOptions(kind))
        outcome = train_version(settings, store)
    finally:
        store.close()
    assert outcome.version.meta["model"] == "toy_cobought"
    if not outcome.promoted:  # the gate may hold a toy back; the seams are the point here
        ModelRegistry(settings.models_dir).promote(outcome.version.name, "toy model under test")
    return settings


@pytest.fixture(scope="module")
def api(project: Settings) -> Iterator[httpx.Client]:
    """A real server on a socket, in this process, so it knows the model registered here."""
    port = free_port()
    config = uvicorn.Config(create_app(project), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        yield client
    server.should_exit = True
    thread.join(timeout=30)


def served(api: httpx.Client, user: str) -> list[dict]:
    response = api.get(f"/v1/users/{user}/recommendations", params={"k": K, "placement": "home"})
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_served_with_reasons_and_real_time_events_change_the_next_answer(
    api: httpx.Client, project: Settings
) -> None:
    user = trained_users(project, 1)[0]
    before = served(api, user)
    assert len(before) == K and all(i["reason"] for i in before)
    assert any(i["reason"].startswith("because you bought") for i in before), before
    bought = before[0]["item_id"]
    event = {"user_id": user, "item_id": bought, "event_type": "purchase"}
    assert api.post("/v1/events", json=event).status_code in (200, 202)
    after = served(api, user)
    assert bought not in [i["item_id"] for i in after]
    assert [i["item_id"] for i in after] != [i["item_id"] for i in before]


def test_the_batch_lists_what_the_api_serves(api: httpx.Client, project: Settings) -> None:
    users = trained_users(project, 4)[1:]
    table = batch_lists(project, users, k=K, placement="home")
    for user in users:
        listed = table[table["user_id"] == user].sort_values("rank")["item_id"].tolist()
        assert listed == [i["item_id"] for i in served(api, user)], user


def test_evaluated_and_tuned_beside_the_built_in_models() -> None:
    events, _ = shop_slice()
    bought = events[events["event_type"] == "purchase"].dropna(subset=["user_id"])
    table = evaluate(bought, models=["toy_cobought", "itemknn"], ks=(10,))
    ndcg = table.set_index("model")["ndcg@10"]
    assert table.set_index("model").loc["toy_cobought", "error"] is None
    assert ndcg["toy_cobought"] > 2 * ndcg["random"]
    result = tune(
        "toy_cobought",
        temporal_split(bought, test_fraction=0.2, validation_fraction=0.1),
        n_trials=3,
        search_space={"shrink": ("float", 1.0, 100.0, "log")},
    )
    assert set(result.best_params) == {"shrink"} and len(result.trials) == 3


def test_a_candidate_generator_of_the_hybrid_pipeline() -> None:
    events, items = shop_slice()
    generators = [{"name": "toy_cobought", "n": 50}, {"name": "trending", "n": 20}]
    model = HybridModel(label_days=7.0, label_windows=1, generators=generators)
    model.fit_events(events, items, weights={})
    assert model.hybrid.stage is not None
    assert [g.name for g in model.hybrid.stage.generators] == ["toy_cobought", "trending"]
    users = events["user_id"].dropna().unique()[:20]
    top = model.recommend_users(list(users), k=10)
    assert (top.items >= 0).sum(axis=1).min() > 0
