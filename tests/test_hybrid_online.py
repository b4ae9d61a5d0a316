"""The per-request pipeline (`hybrid.online`) against the offline one on a synthetic shop:
the same candidates, the same feature values row by row, the same ranker scores, for a known
customer, the same customer after new events, and a newcomer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.datasets import SyntheticShop
from nextbuy.hybrid import HybridRecommender, RankingContext
from nextbuy.hybrid.online import FreshEvent, NewItems, OnlineRanker
from test_hybrid import small_config

# ALS folds a user in by the same least squares with YᵀY computed once: equal up to float
# rounding, so its score gets a tolerance; every other feature must match to the last bits.
ROUNDING = {"als_score": 1e-4}


def fit(protocol: str) -> tuple[HybridRecommender, pd.DataFrame, pd.Timestamp]:
    shop = SyntheticShop(n_users=500, n_items=180, n_categories=8, n_brands=12, seed=5, days=150)
    data = shop.shop_data(n_events=30_000)
    events = data.interactions
    cutoff = events["timestamp"].quantile(0.85)
    hybrid = HybridRecommender(small_config(protocol)).fit(events, data.items, cutoff)
    return hybrid, events, cutoff


@pytest.fixture(scope="module")
def fitted() -> tuple[HybridRecommender, pd.DataFrame, pd.Timestamp]:
    return fit("discovery")


@pytest.fixture(scope="module")
def fitted_repeat() -> tuple[HybridRecommender, pd.DataFrame, pd.Timestamp]:
    """Repeat-aware: the shopper's own items are candidates, so the user × item features
    (baskets with the item, days since, gaps) are computed, not left empty."""
    return fit("repeat")


def fresh_of(extra: pd.DataFrame | None) -> list[FreshEvent]:
    if extra is None:
        return []
    return [
        FreshEvent(str(r.item_id), str(r.event_type), int(pd.Timestamp(r.timestamp).value))
        for r in extra.itertuples()
    ]


def cases(events: pd.DataFrame, cutoff: pd.Timestamp) -> list[tuple]:
    past = events.loc[events["timestamp"] < cutoff]
    user = past["user_id"].value_counts().index[2]
    # what a server sees of an event: who, what, which kind, when (no order or session id)
    later = events.loc[(events["timestamp"] >= cutoff) & (events["user_id"] == user)]
    later = later.head(5)[["user_id", "item_id", "event_type", "timestamp"]]
    assert len(later) >= 2
    now = later["timestamp"].max() + pd.Timedelta(minutes=3)
    return [
        (user, None, None),
        (user, later, now),
        ("someone-new", later.assign(user_id="someone-new"), now),
    ]


@pytest.mark.parametrize("protocol", ["discovery", "repeat"])
@pytest.mark.parametrize("case", [0, 1, 2], ids=["known", "known+events", "newcomer"])
def test_online_feature_rows_equal_the_offline_feature_builders(
    request: pytest.FixtureRequest, protocol: str, case: int
) -> None:
    hybrid, events, cutoff = request.getfixturevalue(
        "fitted" if protocol == "discovery" else "fitted_repeat"
    )
    online = OnlineRanker(hybrid)
    user, extra, now = cases(events, cutoff)[case]
    context = RankingContext(device="mobile", placement="home")
    offline = hybrid.score([user], extra_events=extra, now=now, context=context)
    now_ns = None if now is None else int(pd.Timestamp(now).value)
    mine = online.score(user, fresh_of(extra), now_ns, context)
    assert np.array_equal(offline.candidates.items, mine.candidates.items)
    expected = offline.features[online.feature_order].to_numpy(np.float64)
    assert expected.shape == mine.features.shape and len(expected) > 50
    for j, name in enumerate(online.feature_order):
        np.testing.assert_allclose(
            mine.features[:, j], expected[:, j], rtol=ROUNDING.get(name, 0), err_msg=name
        )
    if protocol == "repeat" and case < 2:
        assert (mine.features[:, online.feature_order.index("ui_baskets")] > 1).any()
    np.testing.assert_allclose(mine.raw, offline.raw, rtol=1e-6)
    offline_top = offline.candidates.items[offline.top(10)[0]]
    assert offline_top.tolist() == mine.candidates.items[np.argsort(-mine.order)[:10]].tolist()


def test_a_new_item_like_what_the_shopper_views_joins_as_a_content_candidate(
    fitted: tuple,
) -> None:
    hybrid, events, cutoff = fitted
    online = OnlineRanker(hybrid)
    user, extra, now = cases(events, cutoff)[1]
    content = next(g.model for g in hybrid.stage.generators if g.name == "content")
    viewed = online.item_index[str(extra["item_id"].iloc[-1])]
    twin = NewItems(
        content.vectors[[viewed]],
        np.asarray([10.0]),
        np.asarray([str(hybrid.stage.features.category[viewed])], dtype=object),
        np.asarray([""], dtype=object),
    )
    scored = online.score(user, fresh_of(extra), int(now.value), new=twin)
    row = int(np.flatnonzero(scored.candidates.items == online.n_items)[0])
    g = scored.candidates.generators.index("content")
    # its content is that of the shopper's latest item: among the content generator's best
    content_n = next(s.n for s in hybrid.config.generators if s.name == "content")
    assert scored.candidates.ranks[row, g] <= content_n / 2
    assert np.isfinite(scored.order[row])
    names = online.feature_order
    assert scored.features[row, names.index("item_users")] == 0.0
    assert scored.features[row, names.index("category_share")] > 0


def test_candidates_generated_ahead_rank_as_the_request_would_have_generated_them(
    fitted: tuple,
) -> None:
    hybrid, events, cutoff = fitted
    online = OnlineRanker(hybrid)
    user, extra, now = cases(events, cutoff)[1]
    fresh, now_ns = fresh_of(extra), int(now.value)
    inline = OnlineRanker(hybrid).score(user, fresh, now_ns)
    online.prepare(user, user, fresh, now_ns)
    ahead = online.score(user, fresh, now_ns, cache_as=user)
    assert ahead.generated_before and not inline.generated_before
    assert np.array_equal(ahead.candidates.items, inline.candidates.items)
    np.testing.assert_array_equal(ahead.features, inline.features)
    np.testing.assert_array_equal(ahead.order, inline.order)
    # ranked hours after it was generated: every age is the one the later request computes
    later_ns = now_ns + 5 * 3_600 * 10**9 + 123
    aged = online.score(user, fresh, later_ns, cache_as=user)
    expected_later = OnlineRanker(hybrid).score(user, fresh, later_ns)
    assert aged.generated_before
    assert not np.array_equal(aged.features, ahead.features)
    np.testing.assert_array_equal(aged.features, expected_later.features)
    np.testing.assert_array_equal(aged.order, expected_later.order)
    # one more event: the generated set no longer matches what the request reads
    later = [*fresh, FreshEvent(str(events["item_id"].iloc[0]), "purchase", now_ns - 1)]
    again = online.score(user, later, now_ns, cache_as=user)
    assert not again.generated_before
    expected = OnlineRanker(hybrid).score(user, later, now_ns)
    assert np.array_equal(again.candidates.items, expected.candidates.items)
    # the request kept what it generated; erasing the shopper drops it
    assert online.score(user, later, now_ns, cache_as=user).generated_before
    assert online.generated.forget(user) and len(online.generated) == 0
    assert not online.score(user, fresh, now_ns).generated_before  # no name: never cached


def test_the_candidate_cache_drops_the_least_recently_used_shopper(fitted: tuple) -> None:
    hybrid, events, cutoff = fitted
    online = OnlineRanker(hybrid)
    online.generated.max_entries = 2
    past = events.loc[events["timestamp"] < cutoff, "user_id"].value_counts().index[:3]
    now_ns = int(cutoff.value)
    for user in past:
        online.prepare(str(user), str(user), [], now_ns)
    assert len(online.generated) == 2
    first, _second, third = (str(u) for u in past)
    assert not online.score(first, [], now_ns, cache_as=first).generated_before
    assert online.score(third, [], now_ns, cache_as=third).generated_before
