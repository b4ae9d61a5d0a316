"""Every recommender on a synthetic shop with a planted answer, plus each model's own contract.

The shop: 300 users and 200 items in 5 clusters (categories); a user only touches items of
their own cluster, more often the cluster's popular ones, in sessions of four events. The
last event of each user is held out. A model that learnt the structure ranks the held-out
item in its top 10 far more often than popularity (which ignores clusters) does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nextbuy.data.matrix import InteractionMatrix, from_frame
from nextbuy.errors import ConfigError, DataError, NotFittedError
from nextbuy.models import (
    EASE,
    CategoryBestsellers,
    FrequentlyBoughtTogether,
    PopularityModel,
    Recommender,
    TrendingModel,
    available_models,
    create_model,
)
from nextbuy.models.ease import item_attributes

N_USERS, N_ITEMS, N_CLUSTERS, PER_USER = 300, 200, 5, 12
PER_CLUSTER = N_ITEMS // N_CLUSTERS
START = pd.Timestamp("2024-03-01", tz="UTC")

# Small, single-threaded settings: the data is tiny and the test machine is shared.
STRUCTURE_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "category_bestsellers": ("category_bestsellers", {}),
    "itemknn-bm25": ("itemknn", {"num_threads": 1}),
    "itemknn-cosine": ("itemknn", {"weighting": "none", "num_threads": 1}),
    "itemknn-tfidf": ("itemknn", {"weighting": "tfidf", "shrink": 1.0, "num_threads": 1}),
    "fbt-lift": ("fbt", {}),
    "fbt-confidence": ("fbt", {"metric": "confidence"}),
    "ease": ("ease", {}),
    "als": ("als", {"factors": 16, "iterations": 10, "num_threads": 1, "use_gpu": False}),
    "bpr": ("bpr", {"factors": 16, "num_threads": 1, "use_gpu": False}),
    "bpr-least-squares": (
        "bpr",
        {"factors": 16, "num_threads": 1, "use_gpu": False, "fold_in": "least_squares"},
    ),
}
BASELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "popularity": ("popularity", {}),
    "trending": ("trending", {}),
    "random": ("random", {"seed": 3}),
}
ALL_MODELS = {**STRUCTURE_MODELS, **BASELINES}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    with threadpool_limits(1):
        yield


def planted_shop(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interactions and the items table (category = cluster) of the synthetic shop."""
    rng = np.random.default_rng(seed)
    rank_weight = 1.0 / np.sqrt(np.arange(1, PER_CLUSTER + 1))
    rows = []
    for u in range(N_USERS):
        cluster = u % N_CLUSTERS
        pool = np.arange(cluster * PER_CLUSTER, (cluster + 1) * PER_CLUSTER)
        chosen = rng.choice(pool, PER_USER, replace=False, p=rank_weight / rank_weight.sum())
        days = np.sort(rng.uniform(0, 60, PER_USER))
        for n, (item, day) in enumerate(zip(chosen, days, strict=True)):
            event = "purchase" if rng.random() < 0.3 else "view"
            when = START + pd.Timedelta(days=float(day))
            rows.append((f"u{u}", f"i{item}", event, when, f"u{u}-s{n // 4}"))
    columns = ["user_id", "item_id", "event_type", "timestamp", "session_id"]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "category": [f"Cluster {i // PER_CLUSTER}" for i in range(N_ITEMS)],
        }
    )
    return pd.DataFrame(rows, columns=columns), items


def cluster_of(item_ids: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.array([int(str(item_ids[i])[1:]) // PER_CLUSTER for i in index])


class Shop:
    """Train data, the items table, and the held-out item of each user."""

    def __init__(self) -> None:
        events, self.items = planted_shop()
        held = events.sort_values("timestamp").groupby("user_id").tail(1)
        self.data = from_frame(events.drop(held.index), half_life_days=30.0)
        self.users = held["user_id"].tolist()
        self.histories = self.data.rows(self.users)
        self.truth = np.array([self.data.item_index[i] for i in held["item_id"]])

    def recall(self, model: Recommender) -> float:
        top = model.recommend(self.histories, 10, exclude=self.histories)
        return float((top.items == self.truth[:, None]).any(axis=1).mean())


@pytest.fixture(scope="module")
def shop() -> Shop:
    return Shop()


@pytest.fixture(scope="module")
def fitted(shop: Shop) -> dict[str, Recommender]:
    return {
        label: create_model(name, **params).fit(shop.data, shop.items)
        for label, (name, params) in ALL_MODELS.items()
    }


def test_every_model_recovers_the_planted_clusters(
    shop: Shop, fitted: dict[str, Recommender]
) -> None:
    recall = {label: shop.recall(model) for label, model in fitted.items()}
    # Guessing the user's cluster right gives about 10 / 35 unseen items: ~0.3 at best uniformly.
    assert recall["random"] < 0.1
    assert recall["popularity"] < 0.2
    for label in STRUCTURE_MODELS:
        assert recall[label] > max(0.3, 2 * recall["popularity"]), (label, recall)


@pytest.mark.parametrize("label", sorted(ALL_MODELS))
def test_save_and_load_give_identical_recommendations(
    label: str, shop: Shop, fitted: dict[str, Recommender], tmp_path: Path
) -> None:
    model = fitted[label]
    model.save(tmp_path / label)
    back = Recommender.load(tmp_path / label)
    assert type(back) is type(model)
    assert back.params() == model.params()
    assert list(back.item_ids) == list(model.item_ids)  # type: ignore[arg-type]
    before = model.recommend(shop.histories, 10, exclude=shop.histories)
    after = back.recommend(shop.histories, 10, exclude=shop.histories)
    np.testing.assert_array_equal(after.items, before.items)
    np.testing.assert_array_equal(after.scores, before.scores)
    items = np.arange(0, N_ITEMS, 7)
    np.testing.assert_array_equal(
        back.similar_items(items, 5).items, model.similar_items(items, 5).items
    )


@pytest.mark.parametrize("label", sorted(ALL_MODELS))
def test_excluded_items_never_appear(
    label: str, shop: Shop, fitted: dict[str, Recommender]
) -> None:
    rng = np.random.default_rng(11)
    banned = sp.random(len(shop.users), N_ITEMS, density=0.3, format="csr", random_state=rng)
    exclude = (banned + shop.histories).tocsr()
    top = fitted[label].recommend(shop.histories, 20, exclude=exclude)
    rows, _ = np.nonzero(top.items >= 0)
    picked = top.items[top.items >= 0]
    assert len(picked) > 0
    assert not np.asarray(exclude[rows, picked]).any()


@pytest.mark.parametrize("label", sorted(STRUCTURE_MODELS))
def test_a_fresh_event_changes_the_recommendation(
    label: str, shop: Shop, fitted: dict[str, Recommender]
) -> None:
    model, data = fitted[label], shop.data
    user = "u0"  # cluster 0; the fresh events are from cluster 3
    before = model.recommend(data.rows([user]), 10).items[0]
    fresh_items = {f"i{i}": 5.0 for i in range(120, 126)}
    fresh = data.rows([user]) + data.history_vector(fresh_items)
    after = model.recommend(fresh, 10).items[0]
    assert list(after) != list(before)
    assert (cluster_of(model.item_ids, after[after >= 0]) == 3).any()  # type: ignore[arg-type]


@pytest.mark.parametrize("label", sorted(ALL_MODELS))
def test_similar_items_are_never_the_item_itself(
    label: str, fitted: dict[str, Recommender]
) -> None:
    items = np.arange(N_ITEMS)
    top = fitted[label].similar_items(items, 10)
    assert top.items.shape == (N_ITEMS, 10)
    assert not (top.items == items[:, None]).any()


@pytest.mark.parametrize("label", sorted(STRUCTURE_MODELS))
def test_similar_items_come_from_the_same_cluster(
    label: str, fitted: dict[str, Recommender]
) -> None:
    model = fitted[label]
    items = np.arange(0, N_ITEMS, 3)
    top = model.similar_items(items, 5)
    mine = cluster_of(model.item_ids, items)  # type: ignore[arg-type]
    same = [
        (cluster_of(model.item_ids, row[row >= 0]) == c).mean()  # type: ignore[arg-type]
        for row, c in zip(top.items, mine, strict=True)
        if (row >= 0).any()
    ]
    assert np.mean(same) > 0.8, label


def test_unreachable_items_pad_with_minus_one(fitted: dict[str, Recommender]) -> None:
    model = fitted["itemknn-bm25"]
    top = model.recommend(sp.csr_matrix((1, N_ITEMS)), 5)  # nothing in the history
    assert (top.items == -1).all() and np.isneginf(top.scores).all()
    wide = sp.csr_matrix(([1.0], ([0], [N_ITEMS + 4])), shape=(1, N_ITEMS + 5))
    assert model.recommend(wide, 3).items.shape == (1, 3)  # an item newer than the model


def test_ease_refuses_too_many_items_unless_pruning(shop: Shop) -> None:
    with pytest.raises(ConfigError, match=r"max_items=50.*prune_items"):
        EASE(max_items=50).fit(shop.data)
    model = EASE(max_items=50, prune_items=True).fit(shop.data)
    users_per_item = np.bincount(shop.data.matrix.indices, minlength=shop.data.n_items)
    assert len(model.kept) == 50
    assert users_per_item[model.kept].min() >= np.sort(users_per_item)[-50]
    scores = model.score(shop.histories)
    pruned = np.setdiff1d(np.arange(shop.data.n_items), model.kept)
    assert np.isneginf(scores[:, pruned]).all()
    top = model.recommend(shop.histories, 10, exclude=shop.histories)
    assert np.isin(top.items[top.items >= 0], model.kept).all()


def _two_genre_shop() -> tuple[InteractionMatrix, pd.DataFrame]:
    """Genre A fans take A items, genre B fans B items; `a_rare` (genre A, both lists) was
    bought once, by a B fan: from purchases alone it looks like a B item."""
    rows = [(f"fa{u}", f"a{i}") for u in range(30) for i in range(8) if (u + i) % 3]
    rows += [(f"fb{u}", f"b{i}") for u in range(30) for i in range(8) if (u + i) % 3]
    rows += [("fb0", "a_rare")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    frame["event_type"] = "purchase"
    frame["timestamp"] = START
    ids = [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(8)] + ["a_rare"]
    genres = ["A"] * 8 + ["B"] * 8 + ["A"]
    items = pd.DataFrame(
        {
            "item_id": ids,
            "category": genres,
            "attributes": [
                {"genres": [g, "film"], "id": i} for g, i in zip(genres, ids, strict=True)
            ],
        }
    )
    return from_frame(frame), items


def test_ease_side_information_lends_an_item_its_genre() -> None:
    data, items = _two_genre_shop()
    rare = list(data.item_ids).index("a_rare")
    fan = list(data.user_ids).index("fa1")
    history = data.matrix[[fan]]
    plain = EASE(reg=10.0).fit(data, items).score(history)[0]
    side = EASE(reg=10.0, side_weight=2.0).fit(data, items).score(history)[0]
    b_items = [list(data.item_ids).index(f"b{i}") for i in range(8)]
    # purchases alone tie the rare item to the B fan's items; its genre moves it to A's side
    assert plain[rare] <= plain[b_items].max()
    assert side[rare] > plain[rare]
    assert side[rare] > side[b_items].max()
    # a value only one item holds (its own id) is left out: it would only regularise that item
    values = item_attributes(items, np.asarray(data.item_ids, dtype=object))
    assert values.shape[1] == 5  # cat=A, cat=B, genres=A, genres=B, genres=film
    with pytest.raises(DataError, match="side_weight"):
        EASE(side_weight=1.0).fit(data)


def baskets_with_a_best_seller() -> InteractionMatrix:
    """Tent + pegs go together; water is in nearly every basket, with or without the tent."""
    rows: list[tuple[str, str]] = []
    for n in range(200):
        basket = [f"o{n}"]
        if n < 40:
            rows += [(basket[0], "tent")] + ([(basket[0], "pegs")] if n < 30 else [])
        if n % 10 != 0:
            rows.append((basket[0], "water"))
        if n >= 40:
            rows.append((basket[0], f"misc{n % 7}"))
    frame = pd.DataFrame(rows, columns=["order_id", "item_id"])
    frame["user_id"] = "u" + frame["order_id"]
    frame["event_type"] = "purchase"
    frame["timestamp"] = START
    return from_frame(frame)


def test_fbt_lift_ranks_a_true_complement_above_a_best_seller() -> None:
    data = baskets_with_a_best_seller()
    lift = FrequentlyBoughtTogether(metric="lift").fit(data)
    confidence = FrequentlyBoughtTogether(metric="confidence").fit(data)
    cart = data.history_vector({"tent": 1.0})
    assert lift.recommend(cart, 1).ids(lift.item_ids) == [["pegs"]]  # type: ignore[arg-type]
    assert confidence.recommend(cart, 1).ids(lift.item_ids) == [["water"]]  # type: ignore[arg-type]
    pairs = lift.pairs("tent", k=5)
    assert list(pairs.columns) == ["item", "support", "confidence", "lift"]
    pegs = pairs.set_index("item").loc["pegs"]
    assert pegs["support"] == 30
    assert pegs["confidence"] == pytest.approx(30 / 40)
    assert pegs["lift"] == pytest.approx(30 / 40 * 200 / 30)
    assert pairs.loc[0, "item"] == "pegs"


def test_fbt_needs_baskets(shop: Shop) -> None:
    no_baskets = from_frame(planted_shop()[0].drop(columns="session_id"))
    with pytest.raises(DataError, match="order_id or session_id"):
        FrequentlyBoughtTogether().fit(no_baskets)


def test_trending_prefers_what_is_popular_lately() -> None:
    old = [(f"u{n}", "classic", START) for n in range(20)]
    new = [(f"v{n}", "newcomer", START + pd.Timedelta(days=60)) for n in range(8)]
    frame = pd.DataFrame(old + new, columns=["user_id", "item_id", "timestamp"])
    data = from_frame(frame.assign(event_type="view"))
    assert PopularityModel().fit(data).recommend(data.rows(["u0"]), 1).items[0, 0] == 0
    trending = TrendingModel(half_life_days=7).fit(data)
    assert trending.recommend(data.rows(["u0"]), 2).ids(data.item_ids) == [["newcomer", "classic"]]


def test_category_bestsellers_follow_the_history_shares(shop: Shop) -> None:
    model = CategoryBestsellers().fit(shop.data, shop.items)
    mostly_cluster_2 = shop.data.history_vector({"i80": 3.0, "i81": 1.0, "i150": 1.0})
    top = model.recommend(mostly_cluster_2, 10).items[0]
    clusters = cluster_of(model.item_ids, top)  # type: ignore[arg-type]
    assert clusters[0] == 2 and set(clusters) <= {2, 3}
    with pytest.raises(DataError, match="category"):
        CategoryBestsellers().fit(shop.data)


def test_registry_and_errors(tmp_path: Path) -> None:
    assert set(available_models()) >= {
        "popularity",
        "trending",
        "category_bestsellers",
        "itemknn",
        "fbt",
        "ease",
        "als",
        "bpr",
        "random",
    }
    assert create_model("ease", reg=10.0).params()["reg"] == 10.0
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("magic")
    with pytest.raises(ConfigError, match="ease"):
        create_model("ease", regularisation=1.0)
    with pytest.raises(ConfigError):
        create_model("itemknn", weighting="bm25", shrink=5.0)
    with pytest.raises(NotFittedError):
        EASE().recommend(sp.csr_matrix((1, 3)), 2)


def test_loading_through_a_subclass_checks_the_kind(
    fitted: dict[str, Recommender], tmp_path: Path
) -> None:
    fitted["ease"].save(tmp_path / "ease")
    assert isinstance(EASE.load(tmp_path / "ease"), EASE)
    with pytest.raises(DataError, match="not a PopularityModel"):
        PopularityModel.load(tmp_path / "ease")


SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ML100K = SHARED / "ml-100k" / "interactions.csv"


@pytest.fixture(scope="module")
def movielens() -> tuple[InteractionMatrix, pd.DataFrame]:
    if not ML100K.is_file():
        pytest.skip("../shared/data not found beside the repository")
    frame = pd.read_csv(ML100K, dtype={"user_id": str, "item_id": str})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    # No orders in MovieLens: a user's ratings of one day stand in for a basket.
    frame["session_id"] = frame["user_id"] + ":" + frame["timestamp"].dt.strftime("%Y-%m-%d")
    items = pd.read_csv(ML100K.with_name("items.csv"), dtype={"item_id": str})
    items["category"] = items["genres"].str.split("|").str[0]
    return from_frame(frame, half_life_days=None), items


@pytest.mark.shared
@pytest.mark.slow
# the hybrid learns from dated events, not a matrix: tests/test_hybrid_serving.py trains it
@pytest.mark.parametrize(
    "name", sorted(n for n, cls in available_models().items() if not cls.needs_events)
)
def test_every_model_fits_movielens_and_serves_every_user(
    name: str, movielens: tuple[InteractionMatrix, pd.DataFrame]
) -> None:
    data, items = movielens
    params: dict = {"num_threads": 1} if name in ("itemknn", "als", "bpr") else {}
    if name == "blend":
        members = [{"model": m, "params": {}} for m in ("ease", "itemknn", "trending")]
        params = {"members": members, "weights": [1.0, 1.0, 0.5]}
    model = create_model(name, **params).fit(data, items)
    if name == "own_history":
        # It re-offers what each user already had, so nothing is left once that is excluded.
        top = model.recommend(data.matrix, 10)
        rows, _ = np.nonzero(top.items >= 0)
        assert np.asarray(data.matrix[rows, top.items[top.items >= 0]]).all()
        return
    top = model.recommend(data.matrix, 10, exclude=data.matrix)
    assert top.items.shape == (943, 10)
    assert (top.items >= 0).mean() > 0.95
    rows, _ = np.nonzero(top.items >= 0)
    assert not np.asarray(data.matrix[rows, top.items[top.items >= 0]]).any()
