"""The hybrid pipeline: candidate merge, leakage-safe features, ranker, objective, reasons,
and the whole pipeline on a synthetic shop with a planted taste."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from context_shop import device_shop
from nextbuy.data.schema import DEFAULT_EVENT_WEIGHTS
from nextbuy.datasets import SyntheticShop
from nextbuy.evaluation import metrics
from nextbuy.hybrid import (
    FeatureBuilder,
    HybridConfig,
    HybridRecommender,
    LeakageError,
    Ranker,
    ValueObjective,
    merge,
    prepare_events,
)
from nextbuy.hybrid.candidates import MISSING_RANK, CandidateSet, GeneratorSpec
from nextbuy.hybrid.explain import ItemFacts, reasons
from nextbuy.hybrid.features import RankingContext, before, feature_names
from nextbuy.hybrid.online import OnlineRanker
from nextbuy.models.base import TopK

CUTOFF = pd.Timestamp("2024-03-01", tz="UTC")


# --------------------------------------------------------------------------- candidates


def test_merge_keeps_one_row_per_user_item_and_every_origin() -> None:
    als = TopK(np.array([[3, 1, -1], [2, 0, 4]]), np.array([[0.9, 0.5, -np.inf], [0.8, 0.7, 0.1]]))
    knn = TopK(np.array([[1, 5], [-1, -1]]), np.array([[2.0, 1.0], [-np.inf, -np.inf]]))
    merged = merge({"als": als, "itemknn": knn}, n_users=2, n_items=6)
    pairs = list(zip(merged.rows.tolist(), merged.items.tolist(), strict=True))
    assert pairs == [(0, 1), (0, 3), (0, 5), (1, 0), (1, 2), (1, 4)]
    both = pairs.index((0, 1))
    assert merged.sources()[both] == ["itemknn", "als"]  # knn ranked it 1st, ALS 2nd
    assert merged.ranks[both].tolist() == [2.0, 1.0]
    assert merged.scores[both].tolist() == pytest.approx([0.5, 2.0])
    only_als = pairs.index((0, 3))
    assert merged.ranks[only_als, 1] == MISSING_RANK and np.isnan(merged.scores[only_als, 1])
    assert merged.group_sizes().tolist() == [3, 3]


# --------------------------------------------------------------------------- leakage


def shop_events() -> pd.DataFrame:
    rows = [
        ("u1", "a", "2024-01-05"),
        ("u1", "b", "2024-02-10"),
        ("u2", "a", "2024-02-20"),
        ("u2", "c", "2024-02-25"),
        ("u3", "b", "2024-01-15"),
    ]
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": "purchase",
            "timestamp": pd.to_datetime([r[2] for r in rows], utc=True),
            "quantity": 1.0,
        }
    )


def candidates_for(items: list[int], users: int = 2) -> CandidateSet:
    rows = np.repeat(np.arange(users), len(items))
    cols = np.tile(np.asarray(items), users)
    scores = np.ones((len(rows), 1), np.float32)
    return CandidateSet(rows, cols, scores, scores.copy(), ("als",), users)


def features_at_cutoff(events: pd.DataFrame, *, strict: bool = False) -> pd.DataFrame:
    prepared = prepare_events(events, DEFAULT_EVENT_WEIGHTS)
    builder = FeatureBuilder(prepared, ["a", "b", "c"], None, CUTOFF, strict=strict)
    return builder.build(candidates_for([0, 1, 2]), ["u1", "u2"])


def test_an_event_at_the_cutoff_changes_no_feature() -> None:
    """The leakage case: u1 buys "c" exactly at the cutoff. Seen, it would make u1's last
    purchase 0 days ago, give u1 a basket with "c" and add a buyer to "c"."""
    clean = features_at_cutoff(shop_events())
    late = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "item_id": ["c", "c"],
            "event_type": "purchase",
            "timestamp": [CUTOFF, CUTOFF + pd.Timedelta(days=3)],
            "quantity": 1.0,
        }
    )
    leaked = features_at_cutoff(pd.concat([shop_events(), late], ignore_index=True))
    pd.testing.assert_frame_equal(clean, leaked)
    # and the case really would have changed them: computed a day later it does
    prepared = prepare_events(pd.concat([shop_events(), late]), DEFAULT_EVENT_WEIGHTS)
    later = FeatureBuilder(prepared, ["a", "b", "c"], None, CUTOFF + pd.Timedelta(days=1))
    moved = later.build(candidates_for([0, 1, 2]), ["u1", "u2"])
    u1_c = 2  # candidate rows: u1 × (a, b, c), then u2 × (a, b, c)
    assert (clean.loc[u1_c, "ui_baskets"], moved.loc[u1_c, "ui_baskets"]) == (0, 1)
    assert (clean.loc[u1_c, "item_users"], moved.loc[u1_c, "item_users"]) == (1, 2)
    assert moved.loc[u1_c, "user_days_since_last"] == pytest.approx(1.0)
    assert clean.loc[u1_c, "user_days_since_last"] > 15


def test_strict_features_reject_future_events() -> None:
    late = shop_events().assign(timestamp=CUTOFF)
    with pytest.raises(LeakageError, match="at or after the cutoff"):
        features_at_cutoff(pd.concat([shop_events(), late]), strict=True)
    prepared = prepare_events(late, DEFAULT_EVENT_WEIGHTS)
    assert before(prepared, CUTOFF).empty


def test_a_request_cannot_be_answered_as_of_a_time_before_the_cutoff() -> None:
    prepared = prepare_events(shop_events(), DEFAULT_EVENT_WEIGHTS)
    builder = FeatureBuilder(prepared, ["a", "b", "c"], None, CUTOFF)
    with pytest.raises(LeakageError):
        builder.build(candidates_for([0]), ["u1", "u2"], now=CUTOFF - pd.Timedelta(hours=1))


def test_events_after_the_request_time_are_not_seen() -> None:
    prepared = prepare_events(shop_events(), DEFAULT_EVENT_WEIGHTS)
    builder = FeatureBuilder(prepared, ["a", "b", "c"], None, CUTOFF)
    now = CUTOFF + pd.Timedelta(days=1)
    extra = prepare_events(
        pd.DataFrame(
            {
                "user_id": ["u1", "u1"],
                "item_id": ["c", "a"],
                "event_type": "purchase",
                "timestamp": [now - pd.Timedelta(hours=2), now + pd.Timedelta(hours=2)],
            }
        ),
        DEFAULT_EVENT_WEIGHTS,
    )
    frame = builder.build(candidates_for([0, 2], users=1), ["u1"], extra_events=extra, now=now)
    assert frame["ui_baskets"].tolist() == [1.0, 1.0]  # "a" from January, "c" from today only
    assert frame["user_days_since_last"].iloc[0] == pytest.approx(2 / 24)


# --------------------------------------------------------------------------- ranker


def test_lambdamart_learns_a_planted_relevance() -> None:
    rng = np.random.default_rng(0)
    groups = np.full(300, 20)
    n = groups.sum()
    signal, noise = rng.normal(size=n), rng.normal(size=n)
    labels = (signal + 0.3 * rng.normal(size=n) > 1.2).astype(int)
    frame = pd.DataFrame({"signal": signal, "noise": noise})
    ranker = Ranker({"n_estimators": 60}, valid_share=0.2)
    report = ranker.fit(frame, labels, groups)
    assert report.valid_ndcg_at_10 is not None and report.valid_ndcg_at_10 > 0.8
    assert report.importance["signal"] > 0.9
    probability = ranker.probability(ranker.predict(frame))
    assert probability[labels == 1].mean() > 2 * probability[labels == 0].mean()


# --------------------------------------------------------------------------- objective


def test_a_dear_item_with_a_better_margin_can_outrank_a_likelier_cheap_one() -> None:
    probability = np.array([0.35, 0.40])
    price = np.array([200.0, 50.0])
    margin = np.array([0.30, 0.20])
    relevance_only = ValueObjective(0.0).score(probability, price, margin)
    blended = ValueObjective(0.3).score(probability, price, margin)
    assert relevance_only[1] > relevance_only[0]
    assert blended[0] > blended[1]
    assert blended.tolist() == pytest.approx([1.638, 1.051], abs=1e-3)
    # without margins the value is the price, and unknown prices take the median
    assert ValueObjective(0.5).value(np.array([10.0, np.nan, 30.0])).tolist() == [10, 20, 30]


# --------------------------------------------------------------------------- explanations


def test_reasons_name_the_strongest_item_specific_signal() -> None:
    names = feature_names(("als", "recent"))
    contributions = np.zeros((3, len(names)))
    at = {n: i for i, n in enumerate(names)}
    contributions[0, at["user_spend"]] = 5.0  # same for all the user's items: not a reason
    contributions[0, at["recent_score"]] = 0.6
    contributions[0, at["recent_rank"]] = 0.3
    contributions[0, at["item_users_7d"]] = 0.8
    contributions[1, at["category_share"]] = 0.4
    contributions[2, at["n_sources"]] = 0.9  # "several agree" is no reason; the origin is
    facts = [
        ItemFacts("Red mug", "MUG", "", "Blue mug", 0.0),
        ItemFacts("Tea towel", "TOWEL", "", None, 0.0),
        ItemFacts("Candle", "CANDLE", "", None, 0.0),
    ]
    found = reasons(contributions, names, facts, ["recent", "als", "als"])
    assert (found[0].signal, found[0].feature) == ("recent", "recent_score")
    assert found[0].text == "Because you bought Blue mug"
    assert found[1].text == "You often buy TOWEL"
    assert (found[2].signal, found[2].text) == ("als", "Customers who shop like you bought it")


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def synthetic() -> tuple[SyntheticShop, pd.DataFrame, pd.DataFrame]:
    shop = SyntheticShop(n_users=600, n_items=200, n_categories=8, n_brands=12, seed=3, days=180)
    data = shop.shop_data(n_events=40_000)
    return shop, data.interactions, data.items  # type: ignore[return-value]


def small_config(protocol: str = "discovery") -> HybridConfig:
    generators = [
        GeneratorSpec("als", 40, {"factors": 16, "iterations": 8, "use_gpu": False}),
        GeneratorSpec("ease", 40, {"reg": 200.0}),
        GeneratorSpec("recent", 20, {"neighbours": 30}),
        GeneratorSpec("content", 20, {"embeddings": "none", "popularity_weight": 0.2}),
        GeneratorSpec("trending", 20, {"half_life_days": 7.0}),
        GeneratorSpec("category", 20, {}),
    ]
    if protocol == "repeat":
        generators.append(GeneratorSpec("buy_again", 30, {}))
    return HybridConfig(
        protocol=protocol,  # type: ignore[arg-type]
        generators=generators,
        label_days=20,
        label_windows=2,
        ranker_params={"n_estimators": 80},
        embeddings="none",
    )


@pytest.fixture(scope="module")
def fitted(synthetic: tuple[SyntheticShop, pd.DataFrame, pd.DataFrame]) -> tuple:
    _, events, items = synthetic
    cutoff = events["timestamp"].quantile(0.85)
    hybrid = HybridRecommender(small_config()).fit(events, items, cutoff)
    return hybrid, events, items, cutoff


def held_out_ndcg(lists: list[list[str]], users: np.ndarray, later: pd.DataFrame) -> float:
    bought = later.groupby("user_id")["item_id"].agg(set)
    index = {
        t: i for i, t in enumerate(sorted(set(later["item_id"]) | {t for r in lists for t in r}))
    }
    truth = sp.lil_matrix((len(users), len(index)))
    top = np.full((len(users), 10), -1)
    for r, (user, items) in enumerate(zip(users, lists, strict=True)):
        for t in bought.get(user, set()):
            truth[r, index[t]] = 1
        top[r, : len(items[:10])] = [index[t] for t in items[:10]]
    keep = metrics.users_with_truth(truth)
    return metrics.summarise(metrics.ranking_metrics(top[keep], sp.csr_matrix(truth)[keep], (10,)))[
        "ndcg@10"
    ]


def test_hybrid_beats_popularity_on_purchases_after_its_cutoff(fitted: tuple) -> None:
    hybrid, events, _, cutoff = fitted
    past, later = (
        events.loc[events["timestamp"] < cutoff],
        events.loc[events["timestamp"] >= cutoff],
    )
    later = later.loc[later["event_type"] == "purchase"]
    seen = past.groupby("user_id")["item_id"].agg(set)
    later = later.loc[
        [
            i not in seen.get(u, set())
            for u, i in zip(later["user_id"], later["item_id"], strict=True)
        ]
    ]
    users = np.asarray(sorted(set(later["user_id"]) & set(past["user_id"])), dtype=object)
    recs = hybrid.recommend(list(users), k=10)
    lists = [recs.loc[recs["user_id"] == u, "item_id"].tolist() for u in users]
    # discovery: nothing the user already had
    assert all(not set(items) & seen.get(u, set()) for u, items in zip(users, lists, strict=True))
    popular = past.loc[past["event_type"] == "purchase", "item_id"].value_counts().index.tolist()
    pop_lists = [[t for t in popular if t not in seen.get(u, set())][:10] for u in users]
    assert held_out_ndcg(lists, users, later) > 1.2 * held_out_ndcg(pop_lists, users, later)


def test_recommendations_come_with_origins_and_plain_reasons(fitted: tuple) -> None:
    hybrid, events, _, cutoff = fitted
    user = events.loc[events["timestamp"] < cutoff, "user_id"].value_counts().index[0]
    recs = hybrid.recommend([user], k=5, explain=True)
    assert len(recs) == 5 and recs["rank"].tolist() == [1, 2, 3, 4, 5]
    assert recs["origin"].isin(["als", "ease", "recent", "content", "trending", "category"]).all()
    assert all(isinstance(r, str) and len(r) > 5 for r in recs["reason"])
    assert recs["score"].is_monotonic_decreasing


def test_a_new_customer_is_served_from_the_session_so_far(fitted: tuple) -> None:
    hybrid, _, items, cutoff = fitted
    category = items.set_index("item_id")["category"].str.split(" > ").str[0]
    top_cat = category.value_counts().index[0]
    picked = items.loc[category.reindex(items["item_id"]).to_numpy() == top_cat, "item_id"][:3]
    now = cutoff + pd.Timedelta(hours=1)
    session = pd.DataFrame(
        {
            "user_id": "newcomer",
            "item_id": picked,
            "event_type": "add_to_cart",
            "timestamp": now - pd.Timedelta(minutes=5),
        }
    )
    cold = hybrid.recommend(["newcomer"], k=10)
    warm = hybrid.recommend(["newcomer"], k=10, extra_events=session, now=now)
    assert not set(warm["item_id"]) & set(picked)
    in_cat = category.reindex(warm["item_id"]).eq(top_cat).mean()
    assert in_cat > category.reindex(cold["item_id"]).eq(top_cat).mean()


def test_save_load_and_the_precomputed_fast_path_agree(fitted: tuple, tmp_path: Path) -> None:
    hybrid, events, _, cutoff = fitted
    users = list(events.loc[events["timestamp"] < cutoff, "user_id"].unique()[:20])
    hybrid.precompute(users, n=20)
    hybrid.save(tmp_path / "hybrid")
    back = HybridRecommender.load(tmp_path / "hybrid")
    before_save = hybrid.recommend(users, k=10)
    after_load = back.recommend(users, k=10)
    pd.testing.assert_frame_equal(
        before_save[["user_id", "item_id"]], after_load[["user_id", "item_id"]]
    )
    cached = back.cached(users[0], 10)
    assert (
        cached["item_id"].tolist()
        == before_save.loc[before_save["user_id"] == users[0], "item_id"].tolist()
    )


def test_the_pipeline_never_learns_from_events_after_its_cutoff(
    synthetic: tuple[SyntheticShop, pd.DataFrame, pd.DataFrame], fitted: tuple
) -> None:
    """Fit on everything, cutoff in the middle: the same model as fitted on the past alone."""
    hybrid, events, items, cutoff = fitted
    past_only = HybridRecommender(small_config()).fit(
        events.loc[events["timestamp"] < cutoff], items, cutoff
    )
    users = list(events["user_id"].unique()[:30])
    pd.testing.assert_frame_equal(
        hybrid.recommend(users, k=10)[["user_id", "item_id", "score"]],
        past_only.recommend(users, k=10)[["user_id", "item_id", "score"]],
    )


def test_repeat_protocol_may_recommend_what_a_customer_buys_again(
    synthetic: tuple[SyntheticShop, pd.DataFrame, pd.DataFrame],
) -> None:
    _, events, items = synthetic
    cutoff = events["timestamp"].quantile(0.85)
    hybrid = HybridRecommender(small_config("repeat")).fit(events, items, cutoff)
    past = events.loc[(events["timestamp"] < cutoff) & (events["event_type"] == "purchase")]
    users = list(past["user_id"].value_counts().index[:20])
    recs = hybrid.recommend(users, k=10)
    owned = past.groupby("user_id")["item_id"].agg(set)
    again = [i in owned[u] for u, i in zip(recs["user_id"], recs["item_id"], strict=True)]
    assert any(again)
    assert "buy_again" in hybrid.stage.generators[-1].name  # type: ignore[union-attr]


# --------------------------------------------------------------------------- request context


def test_the_ranker_learns_the_device_context_from_events_and_ranks_by_it() -> None:
    events, items = device_shop()
    config = HybridConfig(
        generators=[GeneratorSpec("trending", 60, {}), GeneratorSpec("itemknn", 60, {})],
        label_days=15,
        label_windows=3,
        ranker_params={"n_estimators": 60},
        embeddings="none",
        protocol="repeat",
    )
    hybrid = HybridRecommender(config).fit(events, items)
    users = list(pd.unique(events["user_id"])[:100])
    dear = {}
    for device in ("mobile", "desktop"):
        recs = hybrid.recommend(users, k=10, context=RankingContext(device=device))
        dear[device] = recs["item_id"].str[1:].astype(int).ge(60).mean()
    assert dear["mobile"] < 0.3 and dear["desktop"] > 0.7, dear
    assert OnlineRanker(hybrid).reads_context


def test_without_context_in_the_events_lists_never_depend_on_the_device(fitted: tuple) -> None:
    hybrid, events, _, _ = fitted
    users = list(pd.unique(events["user_id"])[:20])
    lists = [
        hybrid.recommend(users, k=10, context=RankingContext(device=d))["item_id"].tolist()
        for d in ("mobile", "desktop")
    ]
    assert lists[0] == lists[1]
    assert not OnlineRanker(hybrid).reads_context
