"""The synthetic shop: deterministic, streamed in chunks, and its planted truth is real."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy.datasets import ShopData, SyntheticShop
from nextbuy.datasets.synthetic import CSV_COLUMNS

N_EVENTS = 200_000


def _small(seed: int = 11, **kwargs: object) -> SyntheticShop:
    return SyntheticShop(
        n_users=400, n_items=300, n_categories=10, n_brands=20, seed=seed, **kwargs
    )


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return _small()


@pytest.fixture(scope="module")
def data(shop: SyntheticShop) -> ShopData:
    return shop.shop_data(N_EVENTS)


def _item_index(item_ids: pd.Series) -> np.ndarray:
    return item_ids.str[1:].astype(int).to_numpy()


def _user_index(user_ids: pd.Series) -> np.ndarray:
    return user_ids.str[1:].astype(int).to_numpy()


def test_same_seed_same_shop_other_seed_other_shop() -> None:
    first, second, other = _small(3), _small(3), _small(4)
    pd.testing.assert_frame_equal(first.items(), second.items())
    pd.testing.assert_frame_equal(first.users(0.5), second.users(0.5))
    events = pd.concat(first.events(30_000, 8_000), ignore_index=True)
    pd.testing.assert_frame_equal(
        events, pd.concat(second.events(30_000, 8_000), ignore_index=True)
    )
    assert not events.equals(pd.concat(other.events(30_000, 8_000), ignore_index=True))
    assert not first.items()["category"].equals(other.items()["category"])


def test_events_stream_in_chunks_of_the_asked_size(shop: SyntheticShop) -> None:
    chunks = list(shop.events(125_000, chunk_rows=50_000))
    assert [len(c) for c in chunks] == [50_000, 50_000, 25_000]
    # The chunk size changes how the stream is cut, never what is in it.
    other = pd.concat(shop.events(125_000, chunk_rows=33_333), ignore_index=True)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), other)
    assert list(shop.events(0)) == []


def test_funnel_views_then_carts_then_orders(data: ShopData) -> None:
    events = data.interactions
    counts = events["event_type"].value_counts()
    assert counts["view"] > 2 * counts["add_to_cart"] > 0
    assert counts["add_to_cart"] > counts["purchase"] > 0
    bought = events["event_type"] == "purchase"
    assert events.loc[bought, "order_id"].notna().all()
    assert events.loc[~bought, "order_id"].isna().all()
    assert (events.loc[bought, "value"] > 0).all()
    assert events.loc[~bought, "value"].isna().all()
    # Each purchase was carted in the same session, and each cart follows a view there.
    # The last session may be cut by the event limit, so skip it.
    whole = events[events["session_id"] != events["session_id"].iloc[-1]]
    first_seen = whole.groupby(["session_id", "item_id", "event_type"])["timestamp"].min()
    first_seen = first_seen.unstack("event_type")
    carted = first_seen["add_to_cart"].notna()
    assert (first_seen.loc[first_seen["purchase"].notna(), "add_to_cart"].notna()).all()
    assert (first_seen.loc[carted, "view"] <= first_seen.loc[carted, "add_to_cart"]).all()
    one_order = whole[whole["event_type"] == "purchase"].groupby("session_id")["order_id"]
    assert (one_order.nunique() == 1).all()


def test_catalog_and_customers(shop: SyntheticShop) -> None:
    items = shop.items()
    assert len(items) == 300
    assert items["item_id"].is_unique
    assert items["category"].str.fullmatch(r"Cat\d\d > Sub\d").all()
    assert (items["price"] > 0).all()
    # Price levels are planted inside each category: premium costs more than budget.
    level = pd.Series(shop.item_price_level)
    by_level = items.groupby([shop.item_category, level])["price"].median().unstack()
    assert (by_level[2] > by_level[0]).all()
    users = shop.users(onboarding_share=1.0)
    assert len(users) == 400
    answers = users["onboarding"].iloc[0]
    truth = shop.ground_truth().top_categories(0, 2)
    assert answers["categories"] == [shop.category_name(int(c)) for c in truth]


def test_timestamps_follow_the_planted_seasons(shop: SyntheticShop, data: ShopData) -> None:
    stamps = data.interactions["timestamp"]
    assert stamps.min() >= shop.start
    assert stamps.max() < shop.start + pd.Timedelta(days=shop.days + 1)
    weekday_counts = stamps.dt.day_of_week.value_counts().sort_index().to_numpy()
    assert np.corrcoef(weekday_counts, shop.weekday_weights)[0, 1] > 0.9
    months = stamps.dt.month.value_counts()
    assert months[12] > 1.5 * months[6]


def test_popularity_has_a_long_tail(data: ShopData) -> None:
    views = data.interactions.loc[data.interactions["event_type"] == "view", "item_id"]
    counts = views.value_counts().to_numpy()
    top_tenth = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_tenth > 0.35


def test_purchases_concentrate_in_the_users_planted_categories(
    shop: SyntheticShop, data: ShopData
) -> None:
    truth = shop.ground_truth()
    bought = data.interactions[data.interactions["event_type"] == "purchase"]
    users, items = _user_index(bought["user_id"]), _item_index(bought["item_id"])
    top2 = np.argsort(-truth.user_taste, axis=1)[:, :2]
    in_top2 = (truth.item_category[items][:, None] == top2[users]).any(axis=1)
    # Chance: how much of what is bought would land there if everyone bought by popularity.
    category_mass = np.bincount(truth.item_category, weights=truth.item_popularity)
    chance = category_mass[top2[users]].sum(axis=1).mean()
    assert in_top2.mean() > 0.5
    assert in_top2.mean() > 3 * chance
    preferred = (truth.item_brand[items][:, None] == truth.user_brands[users]).any(axis=1)
    brand_mass = np.bincount(truth.item_brand, weights=truth.item_popularity)
    assert preferred.mean() > 1.5 * brand_mass[truth.user_brands[users]].sum(axis=1).mean()


def test_true_affinity_is_the_distribution_events_are_drawn_from(
    shop: SyntheticShop, data: ShopData
) -> None:
    events = data.interactions
    heavy = events["user_id"].value_counts().index[0]
    views = _item_index(
        events.loc[(events["user_id"] == heavy) & (events["event_type"] == "view"), "item_id"]
    )
    truth = shop.true_affinity([heavy], "view")[0]
    assert truth.sum() == pytest.approx(1.0)
    _assert_close(np.bincount(views, minlength=shop.n_items), truth, shop.item_popularity)
    # Purchases are too few per user for that, so compare them summed over all buyers.
    bought = events[events["event_type"] == "purchase"]
    per_user = bought["user_id"].value_counts()
    affinity = shop.true_affinity(per_user.index.to_numpy(dtype=object), "purchase")
    expected = per_user.to_numpy() @ affinity
    counts = np.bincount(_item_index(bought["item_id"]), minlength=shop.n_items)
    _assert_close(counts, expected / expected.sum(), shop.item_popularity)


def _assert_close(counts: np.ndarray, truth: np.ndarray, popularity: np.ndarray) -> None:
    """Drawn counts sit near `truth`, much nearer than to plain popularity."""
    empirical = counts / counts.sum()
    distance = 0.5 * np.abs(empirical - truth).sum()
    assert distance < 0.1
    assert distance < 0.4 * (0.5 * np.abs(empirical - popularity).sum())


def test_planted_truth_predicts_held_out_purchases_better_than_popularity(
    shop: SyntheticShop, data: ShopData
) -> None:
    bought = data.interactions[data.interactions["event_type"] == "purchase"]
    half = len(bought) // 2
    train, test = bought.iloc[:half], bought.iloc[half:]
    popular = np.bincount(_item_index(train["item_id"]), minlength=shop.n_items) + 1.0
    popular /= popular.sum()
    affinity = shop.true_affinity(shop.user_ids, "purchase")
    users, items = _user_index(test["user_id"]), _item_index(test["item_id"])
    truth_loglik = np.log(affinity[users, items]).mean()
    popular_loglik = np.log(popular[items]).mean()
    assert truth_loglik > popular_loglik + 0.5
    top = shop.true_top_items("u0", k=5)
    assert len(top) == 5
    ranked = affinity[0][_item_index(pd.Series(top))]
    assert (np.diff(ranked) <= 0).all()
    assert ranked[0] == affinity[0].max()


def test_guests_browse_without_a_user_id() -> None:
    shop = _small(guest_share=0.3)
    events = pd.concat(shop.events(40_000), ignore_index=True)
    sessions = events.groupby("session_id")["user_id"].first()
    assert 0.25 < sessions.isna().mean() < 0.35
    assert events["session_id"].notna().all()


def test_write_csv_uses_nextbuy_columns_and_unix_ms(shop: SyntheticShop, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    assert shop.write_csv(path, 12_345, chunk_rows=5_000) == 12_345
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 12_345 + 1
    expected = pd.concat(shop.events(12_345), ignore_index=True)
    first_ms = int(rows[1][CSV_COLUMNS.index("timestamp")])
    assert pd.Timestamp(first_ms, unit="ms", tz="UTC") == expected["timestamp"].iloc[0]
    assert rows[1][0] == expected["user_id"].iloc[0]


def test_rejects_a_catalog_too_small_for_its_categories() -> None:
    with pytest.raises(ValueError, match="n_items"):
        SyntheticShop(n_users=10, n_items=20, n_categories=10)
