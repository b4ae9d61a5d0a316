"""Train / validation / test splits of an interaction frame.

Three protocols:

- :func:`temporal_split` (the default): one global cut time, everything after it is test.
- :func:`leave_last_out`: each user's last interactions are test.
- :func:`stratified_split`: each user's (or item's) interactions are shuffled with a seed and
  split by ratio, the algorithm of Microsoft Recommenders' ``python_stratified_split`` so
  numbers compare with published tables.

Frames keep their original index and row order. Users and items first seen in the test period
are never dropped: :meth:`Split.segments_of_test` reports them as their own segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from nextbuy.errors import ConfigError, DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")

_TRAIN, _VALIDATION, _TEST = 0, 1, 2

__all__ = [
    "REQUIRED_COLUMNS",
    "Split",
    "TestSegments",
    "leave_last_out",
    "stratified_split",
    "temporal_split",
]


@dataclass(frozen=True)
class TestSegments:
    """Test rows whose user or item never appears in the reference (training) data."""

    new_users: pd.DataFrame
    new_items: pd.DataFrame
    n_new_users: int
    n_new_items: int
    n_anonymous_rows: int

    def summary(self) -> dict[str, int]:
        """Counts for a report: distinct new users/items and the test rows they account for."""
        return {
            "new_users": self.n_new_users,
            "new_user_rows": len(self.new_users),
            "new_items": self.n_new_items,
            "new_item_rows": len(self.new_items),
            "anonymous_rows": self.n_anonymous_rows,
        }


@dataclass(frozen=True)
class Split:
    """The frames of one split, the protocol that made them and its parameters."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    validation_cut: pd.Timestamp | None = None
    test_cut: pd.Timestamp | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def segments_of_test(self, include_validation: bool = False) -> TestSegments:
        """Test users and items absent from train (and validation, if ``include_validation``).

        Rows without a user_id are counted apart: they have no user to be new or known.
        """
        known = pd.concat([self.train, self.validation]) if include_validation else self.train
        test = self.test
        # unique values first: pandas' isin walks its argument in Python for Arrow strings
        known_users = known["user_id"].dropna().unique()
        known_items = known["item_id"].unique()
        has_user = test["user_id"].notna()
        new_user_rows = test[has_user & ~test["user_id"].isin(known_users)]
        new_item_rows = test[~test["item_id"].isin(known_items)]
        return TestSegments(
            new_users=new_user_rows,
            new_items=new_item_rows,
            n_new_users=int(new_user_rows["user_id"].nunique()),
            n_new_items=int(new_item_rows["item_id"].nunique()),
            n_anonymous_rows=int((~has_user).sum()),
        )


# --------------------------------------------------------------------------- checks


def _check_frame(df: pd.DataFrame, needs_time: bool) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"interactions lack column(s) {', '.join(missing)}")
    if needs_time and not pd.api.types.is_datetime64_any_dtype(df["timestamp"]):
        raise DataError(f"column timestamp must be datetime64 (UTC), got {df['timestamp'].dtype}")
    if needs_time and df["timestamp"].isna().any():
        raise DataError(f"{int(df['timestamp'].isna().sum())} interactions have no timestamp")


def _check_fractions(test_fraction: float, validation_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if validation_fraction < 0.0 or test_fraction + validation_fraction >= 1.0:
        raise ConfigError(
            "validation_fraction must be >= 0 and leave room for training data, "
            f"got {validation_fraction} with test_fraction {test_fraction}"
        )


def _assemble(df: pd.DataFrame, part: np.ndarray, protocol: str, **extra: Any) -> Split:
    """Cut ``df`` by a per-row part code (0 train, 1 validation, 2 test)."""
    return Split(
        train=df[part == _TRAIN],
        validation=df[part == _VALIDATION],
        test=df[part == _TEST],
        protocol=protocol,
        **extra,
    )


# --------------------------------------------------------------------------- temporal


def _time_ns(df: pd.DataFrame) -> np.ndarray:
    ts = df["timestamp"]
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC")
    return ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _cut_at(sorted_ns: np.ndarray, tail_fraction: float) -> int:
    """Timestamp at which the latest ``tail_fraction`` of rows begins (by rank)."""
    n = sorted_ns.size
    n_tail = round(n * tail_fraction)
    if n_tail < 1 or n_tail >= n:
        raise DataError(
            f"{n} interactions cannot give a split of {tail_fraction:.0%}: too few rows"
        )
    return int(sorted_ns[n - n_tail])


def _as_timestamp(ns: int, like: pd.Series) -> pd.Timestamp:
    stamp = pd.Timestamp(ns, unit="ns")
    return stamp.tz_localize("UTC") if getattr(like.dt, "tz", None) is not None else stamp


def temporal_split(
    df: pd.DataFrame, test_fraction: float = 0.2, validation_fraction: float = 0.0
) -> Split:
    """Global time split: test holds rows at or after ``test_cut``, train rows before the cuts.

    ``test_cut`` is the timestamp of the row that starts the latest ``test_fraction`` of rows;
    rows tied with it all go to test, so no training row shares or follows a test timestamp.
    With a ``validation_fraction`` the block just before the test period is validation.
    """
    _check_frame(df, needs_time=True)
    _check_fractions(test_fraction, validation_fraction)
    ns = _time_ns(df)
    sorted_ns = np.sort(ns)
    test_cut = _cut_at(sorted_ns, test_fraction)
    part = np.where(ns >= test_cut, _TEST, _TRAIN)
    validation_cut: int | None = None
    if validation_fraction > 0.0:
        validation_cut = _cut_at(sorted_ns, test_fraction + validation_fraction)
        part = np.where((ns >= validation_cut) & (ns < test_cut), _VALIDATION, part)
    ts = df["timestamp"]
    return _assemble(
        df,
        part,
        "temporal",
        validation_cut=None if validation_cut is None else _as_timestamp(validation_cut, ts),
        test_cut=_as_timestamp(test_cut, ts),
        params={"test_fraction": test_fraction, "validation_fraction": validation_fraction},
    )


# --------------------------------------------------------------------------- leave last out


def _group_codes(values: pd.Series) -> np.ndarray:
    """Integer code per row, -1 where the key is missing."""
    codes, _ = pd.factorize(values)
    return codes.astype(np.int64)


def _positions_in_group(codes_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based position of each sorted row inside its group, and its group's size."""
    n = codes_sorted.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    starts = np.flatnonzero(np.r_[True, codes_sorted[1:] != codes_sorted[:-1]])
    sizes = np.diff(np.r_[starts, n])
    return np.arange(n) - np.repeat(starts, sizes), np.repeat(sizes, sizes)


def leave_last_out(df: pd.DataFrame, n: int = 1, validation_n: int = 0) -> Split:
    """Each user's last ``n`` interactions are test, the ``validation_n`` before them validation.

    Order is by timestamp, ties broken by item_id then original row order, so the result does
    not depend on how equal timestamps happen to be stored. A user with no more than
    ``n + validation_n`` interactions, and rows without a user, stay entirely in train.
    """
    _check_frame(df, needs_time=True)
    if n < 1 or validation_n < 0:
        raise ConfigError(
            f"leave_last_out needs n >= 1 and validation_n >= 0, got {n}, {validation_n}"
        )
    users = _group_codes(df["user_id"])
    items, _ = pd.factorize(df["item_id"].astype(str), sort=True)
    order = np.lexsort((np.arange(len(df)), items, _time_ns(df), users))
    pos, size = _positions_in_group(users[order])
    from_end = size - 1 - pos
    eligible = (size > n + validation_n) & (users[order] >= 0)
    part_sorted = np.full(len(df), _TRAIN)
    part_sorted[eligible & (from_end < n + validation_n)] = _VALIDATION
    part_sorted[eligible & (from_end < n)] = _TEST
    part = np.empty_like(part_sorted)
    part[order] = part_sorted
    return _assemble(df, part, "leave_last_out", params={"n": n, "validation_n": validation_n})


# --------------------------------------------------------------------------- stratified


def stratified_split(
    df: pd.DataFrame,
    test_fraction: float = 0.25,
    by: Literal["user", "item"] = "user",
    seed: int = 42,
    validation_fraction: float = 0.0,
    keep_one_in_train: bool = True,
) -> Split:
    """Split each user's (or item's) interactions by ratio after a seeded shuffle.

    The Microsoft Recommenders ``python_stratified_split`` algorithm: one uniform random number
    per row in frame order from ``np.random.RandomState(seed)`` (the stream ``np.random.seed``
    gives), rows ranked by it within their group, and a row with relative rank
    ``r = position / group size`` goes to train if ``r <= 1 - test - validation``, to
    validation if ``r <= 1 - test``, else to test. Given the same frame in the same order, rows
    match theirs. With ``keep_one_in_train`` (the default) the first row of every group stays
    in train, so a group with one interaction is never test-only; set it False to reproduce
    Microsoft's behaviour exactly (their singleton groups go to test). Rows whose ``by``
    key is missing stay in train.
    """
    _check_frame(df, needs_time=False)
    _check_fractions(test_fraction, validation_fraction)
    if by not in ("user", "item"):
        raise ConfigError(f"stratified_split by must be 'user' or 'item', got {by!r}")
    codes = _group_codes(df[f"{by}_id"])
    draws = np.random.RandomState(seed).rand(len(df))
    order = np.lexsort((draws, codes))
    pos, size = _positions_in_group(codes[order])
    rank = (pos + 1) / size
    # cumulative ratios computed as Microsoft does, so float ties at the boundary agree
    train_edge, validation_edge, _ = np.cumsum(
        [1.0 - test_fraction - validation_fraction, validation_fraction, test_fraction]
    )
    part_sorted = np.where(rank <= train_edge, _TRAIN, _TEST)
    if validation_fraction > 0.0:
        middle = (rank > train_edge) & (rank <= validation_edge)
        part_sorted = np.where(middle, _VALIDATION, part_sorted)
    if keep_one_in_train:
        part_sorted[pos == 0] = _TRAIN
    part_sorted[codes[order] < 0] = _TRAIN
    part = np.empty_like(part_sorted)
    part[order] = part_sorted
    return _assemble(
        df,
        part,
        "stratified",
        params={
            "test_fraction": test_fraction,
            "validation_fraction": validation_fraction,
            "by": by,
            "seed": seed,
            "keep_one_in_train": keep_one_in_train,
        },
    )
