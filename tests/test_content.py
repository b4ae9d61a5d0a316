"""Item content features, the content recommender and the content → factor mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from nextbuy.data.catalog_text import infer_category, price_percentile
from nextbuy.data.content import ContentFeatures
from nextbuy.data.embeddings import embeddings_available
from nextbuy.data.matrix import from_frame
from nextbuy.datasets import shared_data_dir
from nextbuy.models import available_models, create_model
from nextbuy.models.base import Recommender
from nextbuy.models.content_model import ContentModel, FactorMapping, extend_factors

needs_shared = pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data not found")


def catalog() -> pd.DataFrame:
    """Two kinds of product, candles and mugs, in two price levels, and one unsold candle."""
    rows = [
        ("c1", "Vanilla scented candle", "Home > Candles", "Glow", 4.0),
        ("c2", "Lavender scented candle", "Home > Candles", "Glow", 6.0),
        ("c3", "Rose scented candle large", "Home > Candles", "Lumen", 12.0),
        ("c4", "Cinnamon scented candle", "Home > Candles", "Lumen", 5.0),  # never sold
        ("m1", "Blue ceramic coffee mug", "Kitchen > Mugs", "Potter", 8.0),
        ("m2", "Red ceramic coffee mug", "Kitchen > Mugs", "Potter", 9.0),
        ("m3", "Striped enamel coffee mug", "Kitchen > Mugs", "Camp", 15.0),
    ]
    frame = pd.DataFrame(rows, columns=["item_id", "title", "category", "brand", "price"])
    return frame.assign(description=frame["title"] + " for the home")


def events() -> pd.DataFrame:
    """u1 buys candles, u2 mugs, u3 both; c4 is never bought."""
    pairs = [("u1", "c1"), ("u1", "c2"), ("u2", "m1"), ("u2", "m2"), ("u3", "c3"), ("u3", "m3")]
    pairs += [("u4", "c1"), ("u5", "m1"), ("u5", "m2")]
    return pd.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "item_id": [i for _, i in pairs],
            "event_type": "purchase",
            "timestamp": pd.date_range("2024-01-01", periods=len(pairs), freq="D", tz="UTC"),
        }
    )


def test_infer_category_names_the_product_type_not_its_colour_or_size() -> None:
    assert infer_category("WHITE HANGING HEART T-LIGHT HOLDER") == "HOLDER"
    assert infer_category("JUMBO BAG RED RETROSPOT") == "BAG"
    assert infer_category("SET OF 3 CAKE TINS PANTRY DESIGN") == "PANTRY"
    assert infer_category("ASSORTED COLOUR BIRD ORNAMENT") == "ORNAMENT"
    assert infer_category("PACK OF 72 RETROSPOT CAKE CASES") == "CASE"
    assert infer_category(None) == ""


def test_price_level_is_a_percentile_within_the_category() -> None:
    prices = np.array([4.0, 6.0, 12.0, np.nan, 8.0, 3.0])
    cats = np.array(["a", "a", "a", "a", "b", "c"], dtype=object)
    level = price_percentile(prices, cats)
    assert level.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.5, 0.5])


def test_features_put_items_of_a_kind_together() -> None:
    features = ContentFeatures.build(catalog(), embeddings="none")
    vectors = features.vectors()
    sims = (vectors @ vectors.T).toarray()
    candle, mug = features.index["c1"], features.index["m1"]
    candles = [features.index[i] for i in ("c2", "c3", "c4")]
    assert sims[candle, candles].min() > sims[candle, mug]
    assert np.allclose(np.linalg.norm(vectors.toarray(), axis=1), 1.0, atol=1e-5)
    assert not features.category_inferred
    assert "cat=Home" in set(features.tokens) and "brand=Glow" in set(features.tokens)
    level = dict(zip(features.item_ids, features.price_level, strict=True))
    assert level["c1"] == 0.0 and level["c3"] == 1.0  # cheapest and dearest candle


def test_a_catalogue_without_categories_gets_inferred_ones() -> None:
    items = catalog().drop(columns="category")
    features = ContentFeatures.build(items, embeddings="none")
    assert features.category_inferred
    assert features.category[features.index["m1"]] == "MUG"
    assert features.category[features.index["c2"]] == "CANDLE"


def test_save_and_load_give_the_same_vectors(tmp_path: Path) -> None:
    features = ContentFeatures.build(catalog(), embeddings="none")
    features.save(tmp_path / "content")
    back = ContentFeatures.load(tmp_path / "content")
    assert (features.vectors() != back.vectors()).nnz == 0
    assert back.item_ids.tolist() == features.item_ids.tolist()
    assert back.query_vector("candle").nnz > 0


class CountingEncoder:
    """Stands in for the sentence encoder and records what it was asked to encode."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        rng = np.random.default_rng(len(self.seen))
        out = rng.normal(size=(len(texts), 8)).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_embeddings_are_computed_only_for_new_or_edited_items() -> None:
    encoder = CountingEncoder()
    first = ContentFeatures.build(catalog(), embeddings="minilm", encoder=encoder)  # type: ignore[arg-type]
    assert len(encoder.seen) == 7 and first.encoded == 7
    changed = catalog()
    changed.loc[changed["item_id"] == "m3", "title"] = "Striped enamel camping mug"
    changed = pd.concat(
        [changed, pd.DataFrame([{"item_id": "n1", "title": "Beeswax pillar candle"}])]
    )
    encoder.seen.clear()
    second = ContentFeatures.build(
        changed,
        embeddings="minilm",
        previous=first,
        encoder=encoder,  # type: ignore[arg-type]
    )
    assert second.encoded == 2
    assert any("camping" in text for text in encoder.seen)
    assert any("Beeswax" in text for text in encoder.seen)
    unchanged = first.index["c1"]
    assert np.array_equal(second.embeddings[second.index["c1"]], first.embeddings[unchanged])  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.skipif(not embeddings_available(), reason="the embeddings extra is not installed")
def test_sentence_embeddings_load_offline_and_place_synonyms_close() -> None:
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["Coffee mug", "Tea cup", "Garden spade"],
        }
    )
    features = ContentFeatures.build(items, embeddings="minilm")
    emb = features.embeddings
    assert emb is not None and emb.shape == (3, 384)
    assert features.embedding_model == "all-MiniLM-L6-v2"
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


# --------------------------------------------------------------------------- content model


def fitted_content_model() -> tuple[ContentModel, object]:
    items = catalog()
    data = from_frame(events(), item_ids=items["item_id"].tolist())
    model = create_model("content", embeddings="none").fit(data, items)
    assert isinstance(model, ContentModel)
    return model, data


def test_content_model_is_registered_and_serves_items_nobody_bought() -> None:
    assert available_models()["content"] is ContentModel
    model, data = fitted_content_model()
    rows = data.rows(["u1"])  # type: ignore[attr-defined]
    top = model.recommend(rows, 2, exclude=rows).ids(model.item_ids)[0]
    assert set(top) == {"c3", "c4"}  # the other candles, the unsold one included
    assert model.similar_items(np.array([data.item_index["m1"]]), 2).ids(model.item_ids)[0] == [  # type: ignore[attr-defined]
        "m2",
        "m3",
    ]


def test_profile_is_the_weighted_mean_of_the_history() -> None:
    model, data = fitted_content_model()
    index = data.item_index  # type: ignore[attr-defined]
    candle_heavy = sp.csr_matrix(
        ([5.0, 1.0], ([0, 0], [index["c1"], index["m1"]])), shape=(1, model.n_items)
    )
    mug_heavy = sp.csr_matrix(
        ([1.0, 5.0], ([0, 0], [index["c1"], index["m1"]])), shape=(1, model.n_items)
    )
    top_candle = model.recommend(candle_heavy, 1, exclude=candle_heavy).ids(model.item_ids)[0]
    top_mug = model.recommend(mug_heavy, 1, exclude=mug_heavy).ids(model.item_ids)[0]
    assert top_candle[0].startswith("c") and top_mug[0].startswith("m")


def test_content_model_round_trips_through_save(tmp_path: Path) -> None:
    model, data = fitted_content_model()
    model.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    rows = data.rows(["u1", "u2", "u3"])  # type: ignore[attr-defined]
    assert np.array_equal(model.score(rows), back.score(rows))
    assert isinstance(back, ContentModel) and back.features is not None


def test_onboarding_answers_rank_the_chosen_category_in_the_price_range() -> None:
    model, _ = fitted_content_model()
    scores = model.onboarding_scores(["Kitchen"], price_max=10.0)
    ranked = [model.item_ids[i] for i in np.argsort(-scores)]  # type: ignore[index]
    assert set(ranked[:2]) == {"m1", "m2"}
    # items above the price range (a mug and a candle) sink below every item within it
    assert set(ranked[-2:]) == {"m3", "c3"}
    unpenalised = model.onboarding_scores(["Kitchen"])
    assert [model.item_ids[i] for i in np.argsort(-unpenalised)][:3].count("m3") == 1  # type: ignore[index]


# --------------------------------------------------------------------------- factor mapping


def test_factor_mapping_gives_a_new_item_collaborative_factors() -> None:
    """Planted: item factors are a linear function of content; the map recovers it."""
    rng = np.random.default_rng(0)
    n_items, n_features, n_factors = 400, 30, 8
    content = sp.csr_matrix(
        rng.random((n_items, n_features)) * (rng.random((n_items, n_features)) < 0.3)
    )
    truth = rng.normal(size=(n_features, n_factors))
    factors = (content @ truth).astype(np.float32)
    trained = np.ones(n_items, bool)
    trained[-40:] = False
    mapping = FactorMapping(alpha=0.1).fit(content, factors, trained)
    predicted = mapping.predict(content[-40:])
    corr = np.corrcoef(predicted.ravel(), factors[-40:].ravel())[0, 1]
    assert corr > 0.9


def test_extended_als_scores_a_new_item_near_its_content_twins() -> None:
    items = catalog()
    data = from_frame(events(), item_ids=items["item_id"].tolist())
    als = create_model("als", factors=4, iterations=10, use_gpu=False, regularization=0.1).fit(data)
    features = ContentFeatures.build(items, embeddings="none")
    vectors = features.aligned(list(data.item_ids))
    new = data.item_index["c4"]
    assert not als.trained[new]  # type: ignore[attr-defined]
    assert np.isneginf(als.score(data.rows(["u1"]))[0, new])
    mapping = FactorMapping(alpha=0.1).fit(vectors, als.item_factors, als.trained)  # type: ignore[attr-defined]
    extended = extend_factors(als, mapping, vectors)
    scores = extended.score(data.rows(["u1"]))[0]
    assert np.isfinite(scores[new])
    # the untouched model still cannot score it: the extension is a copy
    assert np.isneginf(als.score(data.rows(["u1"]))[0, new])


@needs_shared
def test_online_retail_titles_give_product_types_and_neighbours() -> None:
    from nextbuy.datasets import load_online_retail

    items = load_online_retail().items
    assert items is not None
    features = ContentFeatures.build(items, embeddings="none")
    assert features.category_inferred
    assert features.category[features.index["85123A"]] == "HOLDER"
    vectors = features.vectors()
    sims = (vectors @ vectors[features.index["85123A"]].T).toarray().ravel()
    best = [features.item_ids[i] for i in np.argsort(-sims)[1:6]]
    titles = items.set_index("item_id").loc[best, "title"].tolist()
    assert sum("T-LIGHT HOLDER" in t for t in titles) >= 4
