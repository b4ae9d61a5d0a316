"""Splits never leak, keep their ratios per group, are deterministic and report cold segments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.errors import ConfigError, DataError
from nextbuy.evaluation.splits import (
    Split,
    leave_last_out,
    stratified_split,
    temporal_split,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def frame(
    users: list[str], items: list[str], seconds: list[int], tz: str | None = "UTC"
) -> pd.DataFrame:
    ts = pd.to_datetime(seconds, unit="s")
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": ts.tz_localize(tz) if tz else ts,
            "event_type": "purchase",
            "value": 1.0,
        }
    )


def synthetic(n: int = 600, seed: int = 7) -> pd.DataFrame:
    """Random interactions with many tied timestamps and uneven user/item activity."""
    rng = np.random.default_rng(seed)
    users = [f"u{int(x)}" for x in rng.zipf(1.6, n) % 80]
    items = [f"i{int(x)}" for x in rng.zipf(1.4, n) % 120]
    seconds = (rng.integers(0, 200, n) * 3600).tolist()
    return frame(users, items, seconds)


def assert_partition(split: Split, df: pd.DataFrame) -> None:
    """Every input row lands in exactly one part, with its index and content intact."""
    parts = pd.concat([split.train, split.validation, split.test])
    assert sorted(parts.index) == sorted(df.index)
    pd.testing.assert_frame_equal(parts.sort_index(), df.sort_index())


# --------------------------------------------------------------------------- temporal


def test_temporal_split_cuts_at_the_right_row_and_ties_go_to_test() -> None:
    # ten rows at seconds 0..9 with 7 duplicated: the latest 20% begins at the 9th sorted row
    df = frame(["a"] * 10, [f"i{k}" for k in range(10)], [0, 1, 2, 3, 4, 5, 6, 7, 7, 9])
    split = temporal_split(df, test_fraction=0.2)
    assert split.test_cut == pd.Timestamp(7, unit="s", tz="UTC")
    assert sorted(split.test["timestamp"].dt.second) == [7, 7, 9]
    assert split.train["timestamp"].max() < split.test_cut
    assert split.validation.empty and split.validation_cut is None
    assert split.protocol == "temporal"


def test_temporal_split_with_validation_block() -> None:
    df = frame(["a"] * 10, [f"i{k}" for k in range(10)], list(range(10)), tz=None)
    split = temporal_split(df, test_fraction=0.2, validation_fraction=0.3)
    assert split.validation_cut == pd.Timestamp(5, unit="s")
    assert split.test_cut == pd.Timestamp(8, unit="s")
    assert split.train["timestamp"].dt.second.tolist() == [0, 1, 2, 3, 4]
    assert split.validation["timestamp"].dt.second.tolist() == [5, 6, 7]
    assert split.test["timestamp"].dt.second.tolist() == [8, 9]


@settings(max_examples=80, deadline=None)
@given(
    seconds=st.lists(st.integers(0, 30), min_size=5, max_size=60),
    test_fraction=st.floats(0.1, 0.5),
    validation_fraction=st.sampled_from([0.0, 0.1, 0.2]),
)
def test_temporal_split_never_leaks(
    seconds: list[int], test_fraction: float, validation_fraction: float
) -> None:
    n = len(seconds)
    df = frame([f"u{k % 3}" for k in range(n)], [f"i{k % 7}" for k in range(n)], seconds)
    tail = test_fraction + validation_fraction
    if (
        round(n * test_fraction) < 1
        or round(n * tail) >= n
        or (validation_fraction and round(n * tail) < 1)
    ):
        with pytest.raises(DataError):
            temporal_split(df, test_fraction, validation_fraction)
        return
    split = temporal_split(df, test_fraction, validation_fraction)
    assert_partition(split, df)
    assert (split.test["timestamp"] >= split.test_cut).all()
    assert (split.train["timestamp"] < split.test_cut).all()
    assert len(split.test) >= round(n * test_fraction)
    if validation_fraction:
        assert split.validation_cut is not None
        assert (split.train["timestamp"] < split.validation_cut).all()
        assert (split.validation["timestamp"] >= split.validation_cut).all()
        assert (split.validation["timestamp"] < split.test_cut).all()


def test_temporal_split_rejects_bad_input() -> None:
    df = synthetic(50)
    with pytest.raises(ConfigError):
        temporal_split(df, test_fraction=1.0)
    with pytest.raises(ConfigError):
        temporal_split(df, test_fraction=0.5, validation_fraction=0.5)
    with pytest.raises(DataError, match="item_id"):
        temporal_split(df.drop(columns="item_id"))
    with pytest.raises(DataError, match="datetime64"):
        temporal_split(df.assign(timestamp=df["timestamp"].astype("int64")))


# --------------------------------------------------------------------------- leave last out


def test_leave_last_out_takes_each_users_latest() -> None:
    df = frame(
        ["a", "a", "a", "b", "c", "c"],
        ["x", "y", "z", "x", "p", "q"],
        [10, 30, 20, 5, 1, 2],
    )
    split = leave_last_out(df)
    assert sorted(zip(split.test["user_id"], split.test["item_id"], strict=True)) == [
        ("a", "y"),
        ("c", "q"),
    ]
    assert split.train["user_id"].tolist() == ["a", "a", "b", "c"]  # b has one row: kept
    assert_partition(split, df)


def test_leave_last_out_breaks_ties_by_item_not_row_order() -> None:
    df = frame(["a"] * 4, ["m", "z", "b", "k"], [1, 5, 5, 3])
    for seed in range(5):
        shuffled = df.sample(frac=1.0, random_state=seed)
        split = leave_last_out(shuffled, n=1, validation_n=1)
        assert split.test["item_id"].tolist() == ["z"]
        assert split.validation["item_id"].tolist() == ["b"]
        assert sorted(split.train["item_id"]) == ["k", "m"]


def test_leave_last_out_test_never_precedes_users_training() -> None:
    df = synthetic()
    split = leave_last_out(df, n=2)
    assert_partition(split, df)
    last_train = split.train.groupby("user_id")["timestamp"].max()
    first_test = split.test.groupby("user_id")["timestamp"].min()
    assert (first_test >= last_train.reindex(first_test.index)).all()
    assert (split.test.groupby("user_id").size() == 2).all()
    counts = df.groupby("user_id").size()
    assert set(split.test["user_id"]) == set(counts[counts > 2].index)


# --------------------------------------------------------------------------- stratified


def expected_train_count(n: int, test_fraction: float, keep_one: bool) -> int:
    """Rows kept in train for a group of n: relative ranks k/n <= 1 - test_fraction."""
    count = sum(1 for k in range(1, n + 1) if k / n <= 1 - test_fraction)
    return max(count, 1) if keep_one else count


@pytest.mark.parametrize("by", ["user", "item"])
@pytest.mark.parametrize("keep_one", [True, False])
def test_stratified_split_keeps_ratio_per_group(by: str, keep_one: bool) -> None:
    df = synthetic()
    split = stratified_split(df, test_fraction=0.25, by=by, seed=42, keep_one_in_train=keep_one)
    assert_partition(split, df)
    key = f"{by}_id"
    sizes = df.groupby(key).size()
    train_sizes = split.train.groupby(key).size().reindex(sizes.index, fill_value=0)
    for group, n in sizes.items():
        assert train_sizes[group] == expected_train_count(n, 0.25, keep_one), group
        assert abs(train_sizes[group] - 0.75 * n) < 1 or n == 1


def test_singleton_groups_stay_in_train_unless_asked() -> None:
    df = frame(["solo", "a", "a", "a", "a"], ["x", "y", "z", "w", "v"], [0, 1, 2, 3, 4])
    kept = stratified_split(df, by="user")
    assert "solo" in set(kept.train["user_id"]) and "solo" not in set(kept.test["user_id"])
    strict = stratified_split(df, by="user", keep_one_in_train=False)
    assert "solo" in set(strict.test["user_id"])
    assert len(strict.test[strict.test["user_id"] == "a"]) == 1


def test_stratified_split_is_deterministic_for_a_seed() -> None:
    df = synthetic()
    first = stratified_split(df, seed=42)
    again = stratified_split(df, seed=42)
    other = stratified_split(df, seed=43)
    assert first.test.index.equals(again.test.index)
    assert not first.test.index.equals(other.test.index)
    assert first.params["seed"] == 42 and first.protocol == "stratified"


def test_stratified_split_follows_the_seeded_draw_order() -> None:
    # the documented algorithm, written as a plain loop: one draw per row, lowest draws train
    df = synthetic(200, seed=3)
    draws = np.random.RandomState(42).rand(len(df))
    expected_test: list[int] = []
    for _, rows in df.groupby("user_id").indices.items():
        ranked = rows[np.argsort(draws[rows])]
        ranks = np.arange(1, len(ranked) + 1) / len(ranked)
        expected_test += [int(r) for r, q in zip(ranked, ranks, strict=True) if q > 0.75]
    split = stratified_split(df, test_fraction=0.25, by="user", seed=42, keep_one_in_train=False)
    assert sorted(df.index.get_indexer(split.test.index)) == sorted(expected_test)


def test_stratified_split_with_validation() -> None:
    df = frame(["a"] * 10, [f"i{k}" for k in range(10)], list(range(10)))
    split = stratified_split(df, test_fraction=0.2, validation_fraction=0.2, seed=1)
    assert (len(split.train), len(split.validation), len(split.test)) == (6, 2, 2)


def test_stratified_split_rejects_unknown_grouping() -> None:
    with pytest.raises(ConfigError):
        stratified_split(synthetic(20), by="session")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- cold segments


def test_segments_of_test_reports_new_users_and_items() -> None:
    df = frame(
        ["a", "a", "b", "b", "new", "a", None],
        ["x", "y", "x", "y", "x", "fresh", "x"],
        [1, 2, 3, 4, 10, 11, 12],
    )
    split = temporal_split(df, test_fraction=3 / 7)
    seg = split.segments_of_test()
    assert seg.new_users["user_id"].tolist() == ["new"]
    assert seg.new_items["item_id"].tolist() == ["fresh"]
    assert seg.summary() == {
        "new_users": 1,
        "new_user_rows": 1,
        "new_items": 1,
        "new_item_rows": 1,
        "anonymous_rows": 1,
    }
    assert len(split.test) == 3  # nothing dropped


# --------------------------------------------------------------------------- real data


def load(name: str) -> pd.DataFrame:
    path = SHARED / name / "interactions.csv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    df = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
    df["timestamp"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
    return df


@pytest.mark.shared
@pytest.mark.parametrize("by", ["user", "item"])
def test_movielens_stratified_75_25(by: str) -> None:
    df = load("ml-100k")
    split = stratified_split(df, test_fraction=0.25, by=by, seed=42)
    key = f"{by}_id"
    sizes = df.groupby(key).size()
    test_sizes = split.test.groupby(key).size().reindex(sizes.index, fill_value=0)
    assert (test_sizes == sizes - sizes.map(lambda n: expected_train_count(n, 0.25, True))).all()
    # per-group flooring sends slightly more than a quarter to test, as in Microsoft's split
    assert 0.25 <= len(split.test) / len(df) < 0.27
    if by == "user":  # every MovieLens user has at least 20 ratings
        assert split.segments_of_test().n_new_users == 0


@pytest.mark.shared
def test_online_retail_temporal_80_20_reports_new_customers() -> None:
    df = load("online-retail")
    df = df[df["event_type"] == "purchase"]
    split = temporal_split(df, test_fraction=0.2)
    assert split.train["timestamp"].max() < split.test_cut <= split.test["timestamp"].min()
    assert math.isclose(len(split.test) / len(df), 0.2, abs_tol=0.01)
    seg = split.segments_of_test()
    assert seg.n_new_users > 0 and seg.n_new_items > 0
    assert seg.new_users["user_id"].isin(split.train["user_id"].unique()).sum() == 0
