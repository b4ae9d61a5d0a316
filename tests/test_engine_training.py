"""Engine, training with its promotion gate, model registry, batch recommendations."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from nextbuy.config import Settings
from nextbuy.datasets import SyntheticShop
from nextbuy.engine import Engine
from nextbuy.errors import NotFoundError
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.store.registry import ModelRegistry
from nextbuy.store.sqlite import SQLiteStore
from nextbuy.training import train_version


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return SyntheticShop(
        n_users=600, n_items=500, n_categories=8, n_brands=10, seed=3, taste_share=0.9
    )


@pytest.fixture(scope="module")
def events(shop: SyntheticShop) -> pd.DataFrame:
    return pd.concat(list(shop.events(30_000)), ignore_index=True)


@pytest.fixture
def filled_store(
    store: SQLiteStore, settings: Settings, shop: SyntheticShop, events: pd.DataFrame
) -> SQLiteStore:
    import_frame(store, settings, shop.items(), "synthetic:items", ImportOptions("items"))
    import_frame(store, settings, events, "synthetic:events", ImportOptions("interactions"))
    return store


def test_engine_recommends_known_and_unknown_users_and_saves(
    tmp_path: Path, shop: SyntheticShop, events: pd.DataFrame
) -> None:
    engine = Engine(model="ease").fit(events, shop.items())
    user = events["user_id"].dropna().iloc[0]
    recs = engine.recommend(user, k=10)
    assert len(recs) == 10 and recs["item_id"].is_unique
    seen = set(events.loc[events["user_id"] == user, "item_id"])
    assert seen.isdisjoint(recs["item_id"])
    cold = engine.recommend("never-seen", k=5)
    assert len(cold) == 5
    engine.save(tmp_path / "engine")
    again = Engine.load(tmp_path / "engine")
    pd.testing.assert_frame_equal(again.recommend(user, k=10), recs)
    with pytest.raises(NotFoundError):
        engine.similar("no-such-item")


def test_a_fresh_event_changes_the_answer_without_retraining(
    shop: SyntheticShop, events: pd.DataFrame
) -> None:
    engine = Engine(model="itemknn").fit(events, shop.items())
    first = events["item_id"].iloc[0]
    base = engine.recommend_history({first: 1.0}, k=10)
    assert len(base) == 10
    changed = engine.recommend_history({first: 1.0, base["item_id"].iloc[0]: 5.0}, k=10)
    assert base["item_id"].iloc[0] not in set(changed["item_id"])
    assert list(base["item_id"]) != list(changed["item_id"])


def test_train_registers_promotes_and_gates_a_worse_model(
    settings: Settings, filled_store: SQLiteStore
) -> None:
    first = train_version(settings, filled_store, model="ease")
    assert first.promoted and first.reason == "first version"
    assert first.metrics["ndcg@10"] > 0
    worse = train_version(settings, filled_store, model="random")
    assert not worse.promoted
    assert "kept v0001" in worse.reason
    registry = ModelRegistry(settings.models_dir)
    assert [v.name for v in registry.versions()] == ["v0001", "v0002"]
    assert registry.serving_state()["version"] == "v0001"
    registry.promote("v0002", "by hand")
    assert registry.rollback() == "v0001"
    assert registry.serving().name == "v0001"


def test_train_validation_beats_popularity_on_planted_tastes(
    settings: Settings, filled_store: SQLiteStore
) -> None:
    ease = train_version(settings, filled_store, model="ease").metrics["recall@10"]
    popular = train_version(settings, filled_store, model="popularity").metrics["recall@10"]
    assert ease > 1.5 * popular


def cli_project(folder: Path, events: pd.DataFrame) -> Callable[..., subprocess.CompletedProcess]:
    """A project in `folder` with the events as a CSV beside it, and a way to run the CLI."""
    (folder / "nextbuy.toml").write_text('data_dir = "data"\n')
    events.to_csv(folder / "events.csv", index=False)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        run = [sys.executable, "-m", "nextbuy.cli", *args]
        return subprocess.run(run, cwd=folder, capture_output=True, text=True)

    return cli


def test_batch_recommendations_through_the_cli(
    tmp_path: Path, shop: SyntheticShop, events: pd.DataFrame
) -> None:
    cli = cli_project(tmp_path, events)
    assert cli("recommend").returncode == 2  # nothing trained yet: a clear error
    assert cli("import", "interactions", "events.csv").returncode == 0
    assert cli("train", "--model", "itemknn").returncode == 0
    done = cli("recommend", "--users", "all", "--k", "5", "--out", "recs.parquet")
    assert done.returncode == 0, done.stderr
    recs = pd.read_parquet(tmp_path / "recs.parquet")
    assert recs["user_id"].nunique() == events["user_id"].nunique()
    assert (recs.groupby("user_id").size() == 5).all()
    listed = cli("models", "list")
    assert "v0001" in listed.stdout


def test_train_chooses_keeps_the_leaderboard_and_starts_a_retrain_from_the_served_version(
    settings: Settings, filled_store: SQLiteStore
) -> None:
    settings.training.budget = "15s"
    first = train_version(settings, filled_store)
    assert first.promoted and first.choice is not None
    meta = first.version.meta
    assert meta["model"] == first.choice.winner.candidate.model
    assert meta["choice"]["verdict"] == first.choice.verdict()
    assert meta["exclude_seen"] == (first.choice.protocol == "discovery")
    assert len(meta["choice"]["trials"]) > 5
    again = train_version(settings, filled_store)
    assert again.choice is not None
    assert again.choice.trials[0].stage == "in service"  # scored first, on today's window
    assert again.choice.trials[0].candidate.model == meta["model"]
    assert again.serving_metrics is not None


def test_a_configured_model_is_trained_as_it_is_and_said_to_lose_to_a_baseline(
    settings: Settings, filled_store: SQLiteStore
) -> None:
    outcome = train_version(settings, filled_store, model="random")
    assert outcome.version.meta["model"] == "random"
    assert outcome.choice is not None
    assert any("not above the baseline" in note for note in outcome.choice.notes)


def test_train_prints_the_data_the_leaderboard_and_the_verdict(
    tmp_path: Path, shop: SyntheticShop, events: pd.DataFrame
) -> None:
    cli = cli_project(tmp_path, events)
    assert cli("import", "interactions", "events.csv").returncode == 0
    done = cli("train", "--budget", "15s")
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "leaderboard: validation window" in out
    assert "validation: the latest tenth of the events is held out" in out
    assert "lists: returning customers had had" in out
    assert "popularity" in out and "NDCG@10" in out
    assert "chose " in out or "serving " in out
    assert "promoted: first version" in out


def test_lists_of_new_items_are_topped_up_without_what_the_user_had(
    shop: SyntheticShop, events: pd.DataFrame
) -> None:
    engine = Engine(model="own_history").fit(events, shop.items())
    users = list(events["user_id"].dropna().unique()[:50])
    new_only = engine.recommend_users(users, k=10, exclude_seen=True)
    assert (new_only.groupby("user_id").size() == 10).all()
    had = events.groupby("user_id")["item_id"].agg(set)
    for user, group in new_only.groupby("user_id"):
        assert had[user].isdisjoint(group["item_id"])
    repeats = engine.recommend_users(users, k=10, exclude_seen=False)
    assert any(not had[u].isdisjoint(g["item_id"]) for u, g in repeats.groupby("user_id"))
