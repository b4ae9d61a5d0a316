"""Interactions → a weighted user × item sparse matrix with stable id maps.

An event weighs `weights[event_type] × 0.5 ** (age_days / half_life_days)`, its age taken
relative to `reference_time` (by default the latest timestamp seen). Repeated (user, item)
events are summed. Batches are read once and reduced to (row, column, value) triples as they
arrive, so memory grows with the number of distinct pairs, not with the number of events.

Besides the weighted matrix the build keeps what popularity, trend and basket models need
from the same single pass: raw event counts, per-item daily totals, when each item was last
seen and a basket × item matrix of orders (or sessions).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from nextbuy.data.files import atomic_savez, atomic_write_text, pack_csr, str_array, unpack_csr
from nextbuy.data.schema import DEFAULT_EVENT_WEIGHTS
from nextbuy.errors import DataError, NotFoundError

MS_PER_DAY = 86_400_000
NAT = np.iinfo(np.int64).min  # numpy's NaT as an int64 in datetime64[ms]
FORMAT_VERSION = 1
_COMPACT_MIN = 2_000_000  # triples held before duplicates are summed away

Batch = pa.RecordBatch | pa.Table | pd.DataFrame
RATING_MODES: tuple[str, ...] = ("ignore", "scaled", "liked")


@dataclass(frozen=True)
class RatingValues:
    """How a rating event's value scales its event-type weight.

    "ignore": every rating weighs the same (a 1-star counts like a 5-star); "scaled": times
    value / top of the scale; "liked": times how far the value sits above the scale's middle
    (0 at or below it, 1 at the top), so a poor rating says nothing. Ratings without a value
    keep their type's weight.
    """

    mode: str = "ignore"
    low: float = 1.0
    high: float = 5.0

    def __post_init__(self) -> None:
        if self.mode not in RATING_MODES:
            raise DataError(f"rating values must be one of {', '.join(RATING_MODES)}")
        if not self.high > self.low:
            raise DataError(f"rating scale needs low < high, got {self.low}..{self.high}")

    def factors(self, values: np.ndarray) -> np.ndarray:
        """The weight factor of each rating value (NaN: no value, factor 1)."""
        values = np.asarray(values, np.float64)
        if self.mode == "scaled":
            out = np.clip(values / self.high, 0.0, 1.0)
        elif self.mode == "liked":
            middle = (self.low + self.high) / 2.0
            out = np.clip((values - middle) / (self.high - middle), 0.0, 1.0)
        else:
            out = np.ones_like(values)
        return np.where(np.isnan(values), 1.0, out)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "low": self.low, "high": self.high}


@dataclass
class InteractionMatrix:
    """A weighted user × item matrix, its id maps and the side tables models train on."""

    matrix: sp.csr_matrix  # float32 users × items, event weights × decay, summed
    counts: sp.csr_matrix  # float32 users × items, raw number of events (unweighted)
    user_ids: np.ndarray  # object array of str: row → user id
    item_ids: np.ndarray  # object array of str: column → item id
    reference_time: pd.Timestamp | None = None
    item_last_seen: np.ndarray | None = None  # datetime64[ms] per item, NaT when unknown
    # items × days since 1970-01-01 (UTC): event weights without decay, anonymous events too.
    item_daily: sp.csr_matrix | None = None
    baskets: sp.csr_matrix | None = None  # binary float32 baskets × items (orders or sessions)
    weights: dict[str, float] = field(default_factory=dict)
    half_life_days: float | None = None
    unknown_event_types: dict[str, int] = field(default_factory=dict)
    ratings: RatingValues = field(default_factory=RatingValues)
    user_index: dict[str, int] = field(init=False, repr=False)
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}
        self.item_index = {t: i for i, t in enumerate(self.item_ids)}

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    def history_vector(self, item_weights: Mapping[str, float]) -> sp.csr_matrix:
        """A 1 × n_items history row; items unknown to this matrix are ignored."""
        cols = [self.item_index[t] for t in item_weights if t in self.item_index]
        vals = [float(w) for t, w in item_weights.items() if t in self.item_index]
        return sp.csr_matrix(
            (np.asarray(vals, np.float32), (np.zeros(len(cols), np.int64), cols)),
            shape=(1, self.n_items),
        )

    def rows(self, user_ids: Sequence[str]) -> sp.csr_matrix:
        """The trained history rows of these users; unknown users get an empty row."""
        idx = np.fromiter((self.user_index.get(u, -1) for u in user_ids), np.int64, len(user_ids))
        known = idx >= 0
        picked = self.matrix[np.where(known, idx, 0)] if self.n_users else None
        if picked is None:
            return sp.csr_matrix((len(user_ids), self.n_items), dtype=np.float32)
        out = sp.csr_matrix(sp.diags(known.astype(np.float32)) @ picked)
        out.eliminate_zeros()
        return out

    def save(self, path: Path) -> None:
        """Write a folder with matrix.json and arrays.npz (no pickle)."""
        path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "user_ids": str_array(self.user_ids),
            "item_ids": str_array(self.item_ids),
        }
        for name in ("matrix", "counts", "item_daily", "baskets"):
            value = getattr(self, name)
            if value is not None:
                arrays.update(pack_csr(name, value))
        if self.item_last_seen is not None:
            arrays["item_last_seen"] = self.item_last_seen.astype("datetime64[ms]").view(np.int64)
        meta = {
            "format": FORMAT_VERSION,
            "reference_time": None
            if self.reference_time is None
            else self.reference_time.isoformat(),
            "weights": self.weights,
            "half_life_days": self.half_life_days,
            "unknown_event_types": self.unknown_event_types,
            "ratings": self.ratings.to_json(),
        }
        atomic_savez(path / "arrays.npz", arrays)
        atomic_write_text(path / "matrix.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> InteractionMatrix:
        """Read a folder written by `save`."""
        if not (path / "matrix.json").is_file():
            raise NotFoundError(f"{path}: no saved interaction matrix (matrix.json missing)")
        meta = json.loads((path / "matrix.json").read_text(encoding="utf-8"))
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        last_seen = arrays.get("item_last_seen")
        ref = meta["reference_time"]
        return cls(
            matrix=unpack_csr("matrix", arrays),
            counts=unpack_csr("counts", arrays),
            user_ids=arrays["user_ids"].astype(object),
            item_ids=arrays["item_ids"].astype(object),
            reference_time=None if ref is None else pd.Timestamp(ref),
            item_last_seen=None if last_seen is None else last_seen.view("datetime64[ms]"),
            item_daily=unpack_csr("item_daily", arrays) if "item_daily.shape" in arrays else None,
            baskets=unpack_csr("baskets", arrays) if "baskets.shape" in arrays else None,
            weights=meta["weights"],
            half_life_days=meta["half_life_days"],
            unknown_event_types=meta["unknown_event_types"],
            ratings=RatingValues(**meta.get("ratings", {})),
        )


def build_matrix(
    batches: Iterable[Batch],
    weights: Mapping[str, float],
    half_life_days: float | None,
    reference_time: pd.Timestamp | None = None,
    item_ids: Sequence[str] | None = None,
    *,
    time_unit: str | None = None,
    ratings: RatingValues | None = None,
) -> InteractionMatrix:
    """Read interaction batches once into an `InteractionMatrix`.

    Rows without a user_id count for items (trends, baskets) but not for the user matrix.
    Event types missing from `weights` weigh 0 and are tallied in `unknown_event_types`.
    `item_ids` fixes the first columns, so indices stay stable across rebuilds.
    `time_unit` ("s", "ms", ...) reads numeric timestamps in DataFrames. `ratings` says how
    a rating's value scales its weight (by default it does not).
    """
    if half_life_days is not None and half_life_days <= 0:
        raise DataError(f"half_life_days must be positive, got {half_life_days}")
    ratings = ratings or RatingValues()
    builder = _Builder(
        dict(weights), half_life_days, _utc(reference_time), item_ids, time_unit, ratings
    )
    optional = ("user_id", "order_id", "session_id")
    if ratings.mode != "ignore":
        optional += ("value",)
    for batch in batches:
        builder.add(_columns(batch, time_unit, optional=optional))
    return builder.finish()


def from_frame(
    df: pd.DataFrame,
    weights: Mapping[str, float] | None = None,
    half_life_days: float | None = None,
    reference_time: pd.Timestamp | None = None,
    item_ids: Sequence[str] | None = None,
    *,
    time_unit: str | None = None,
    ratings: RatingValues | None = None,
) -> InteractionMatrix:
    """`build_matrix` for one DataFrame of interactions (default event weights, no decay)."""
    return build_matrix(
        [df],
        DEFAULT_EVENT_WEIGHTS if weights is None else weights,
        half_life_days,
        reference_time,
        item_ids,
        time_unit=time_unit,
        ratings=ratings,
    )


def build_basket_matrix(
    batches: Iterable[Batch],
    key: str = "order_id",
    fallback: str | None = "session_id",
    item_ids: Sequence[str] | None = None,
    *,
    weights: Mapping[str, float] | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """A binary baskets × items matrix and its item ids.

    A row's basket is its `key` column, or `fallback` where `key` is empty; rows with
    neither are skipped. With `weights`, only event types of positive weight count.
    """
    items = _IdMap(item_ids)
    baskets = _BasketParts(key, fallback)
    for batch in batches:
        optional = (key,) if fallback is None else (key, fallback)
        cols = _columns(batch, None, ("item_id", "event_type"), optional)
        item_codes = items.encode(cols["item_id"])
        keep = np.ones(len(item_codes), bool)
        if weights is not None:
            keep = _event_weights(cols["event_type"], weights, {}) > 0
        baskets.add(cols, item_codes, keep)
    return baskets.finish(len(items)), items.array()


# -- internals -------------------------------------------------------------------------------


class _IdMap:
    """A growing str → int map; codes never change once given."""

    def __init__(self, ids: Iterable[str] | None = None) -> None:
        self.index: dict[str, int] = {}
        for value in map(str, ids or ()):
            if value in self.index:
                raise DataError(f"item_ids repeats {value!r}")
            self.index[value] = len(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def encode(self, values: np.ndarray) -> np.ndarray:
        codes, uniques = pd.factorize(values)
        index = self.index
        lookup = np.fromiter(
            (index.setdefault(str(u), len(index)) for u in uniques), np.int64, len(uniques)
        )
        return lookup[codes]

    def array(self) -> np.ndarray:
        return np.array(list(self.index), dtype=object)


class _PairSums:
    """Sums of values per (row, column), kept as triples that are compacted as they grow.

    A part may carry an anchor time: its values are then decayed relative to that anchor and
    rescaled once the reference time is known (the latest time is only known at the end).
    """

    def __init__(self, half_life_ms: float | None = None) -> None:
        self.half_life_ms = half_life_ms
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, float | None]] = []
        self.held = 0
        self.compact_at = _COMPACT_MIN

    def add(
        self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, anchor: float | None = None
    ) -> None:
        if len(rows):
            self.parts.append((rows, cols, vals.astype(np.float64), anchor))
            self.held += len(rows)
        if self.held > self.compact_at:
            self._compact()

    def _shift(self, vals: np.ndarray, anchor: float | None, to: float | None) -> np.ndarray:
        if anchor is None or to is None or not self.half_life_ms:
            return vals
        return vals * 0.5 ** ((to - anchor) / self.half_life_ms)

    def _compact(self) -> None:
        latest = max((p[3] for p in self.parts if p[3] is not None), default=None)
        anchored = [(r, c, self._shift(v, a, latest)) for r, c, v, a in self.parts if a is not None]
        plain = [(r, c, v) for r, c, v, a in self.parts if a is None]
        self.parts = [
            (*_sum_triples(group), anchor)
            for group, anchor in ((anchored, latest), (plain, None))
            if group
        ]
        self.held = sum(len(p[0]) for p in self.parts)
        self.compact_at = max(2 * self.held, _COMPACT_MIN)

    def to_csr(self, shape: tuple[int, int], reference: float | None) -> sp.csr_matrix:
        if not self.parts:
            return sp.csr_matrix(shape, dtype=np.float32)
        rows, cols, vals = _concat(
            [(r, c, self._shift(v, a, reference)) for r, c, v, a in self.parts]
        )
        out = sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float64)
        out.sum_duplicates()
        return out.astype(np.float32)


def _concat(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
    return rows, cols, vals


def _sum_triples(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols, vals = _concat(parts)
    shape = (int(rows.max()) + 1, int(cols.max()) + 1)
    summed = sp.coo_matrix((vals, (rows, cols)), shape=shape).tocsr().tocoo()
    return summed.row.astype(np.int64), summed.col.astype(np.int64), summed.data


class _BasketParts:
    """(basket, item) pairs keyed by order id, or session id where the order id is empty."""

    def __init__(self, key: str, fallback: str | None) -> None:
        self.key, self.fallback = key, fallback
        self.ids = _IdMap()
        self.pairs = _PairSums()

    def add(self, cols: dict[str, np.ndarray], item_codes: np.ndarray, keep: np.ndarray) -> None:
        keys = _basket_keys(cols.get(self.key), cols.get(self.fallback or ""), len(item_codes))
        if keys is None:
            return
        keep = keep & pd.notna(keys)
        if keep.any():
            self.pairs.add(self.ids.encode(keys[keep]), item_codes[keep], np.ones(keep.sum()))

    def finish(self, n_items: int) -> sp.csr_matrix:
        out = self.pairs.to_csr((len(self.ids), n_items), None)
        out.data[:] = 1.0
        return out


def _basket_keys(
    primary: np.ndarray | None, fallback: np.ndarray | None, n: int
) -> np.ndarray | None:
    # Prefixes keep an order "17" and a session "17" apart.
    if primary is None and fallback is None:
        return None
    keys = np.full(n, None, dtype=object)
    for prefix, values in (("s:", fallback), ("o:", primary)):
        if values is not None:
            present = pd.notna(values) & (values != "")
            keys[present] = prefix + values[present].astype(str).astype(object)
    return keys


class _Builder:
    """The state of one pass over the interaction batches."""

    def __init__(
        self,
        weights: dict[str, float],
        half_life_days: float | None,
        reference: pd.Timestamp | None,
        item_ids: Sequence[str] | None,
        time_unit: str | None,
        ratings: RatingValues,
    ) -> None:
        self.weights = weights
        self.ratings = ratings
        self.half_life_days = half_life_days
        self.half_life_ms = None if half_life_days is None else half_life_days * MS_PER_DAY
        self.reference_ms = None if reference is None else reference.value // 1_000_000
        self.users, self.items = _IdMap(), _IdMap(item_ids)
        self.weighted = _PairSums(self.half_life_ms)
        self.counts = _PairSums()
        self.daily = _PairSums()
        self.baskets = _BasketParts("order_id", "session_id")
        self.last_seen = np.full(len(self.items), NAT, np.int64)
        self.latest = NAT
        self.unknown: dict[str, int] = {}

    def add(self, cols: dict[str, np.ndarray]) -> None:
        item = self.items.encode(cols["item_id"])
        ts, has_ts = cols["timestamp"], cols["timestamp"] != NAT
        weight = _event_weights(cols["event_type"], self.weights, self.unknown)
        if "value" in cols:
            rated = cols["event_type"] == "rating"
            values = pd.to_numeric(pd.Series(cols["value"][rated]), errors="coerce")
            weight[rated] *= self.ratings.factors(values.to_numpy(np.float64))
        self._track_time(item, ts, has_ts)
        days = ts // MS_PER_DAY
        in_trend = has_ts & (days >= 0)  # pre-1970 times would make negative columns
        self.daily.add(item[in_trend], days[in_trend], weight[in_trend])
        self.baskets.add(cols, item, weight > 0)
        has_user = pd.notna(cols["user_id"])
        if not has_user.any():
            return
        user = self.users.encode(cols["user_id"][has_user])
        item, ts, has_ts, weight = item[has_user], ts[has_user], has_ts[has_user], weight[has_user]
        self.counts.add(user, item, np.ones(len(user)))
        self._add_weighted(user, item, weight, ts, has_ts)

    def _track_time(self, item: np.ndarray, ts: np.ndarray, has_ts: np.ndarray) -> None:
        if len(self.last_seen) < len(self.items):
            grown = np.full(len(self.items), NAT, np.int64)
            grown[: len(self.last_seen)] = self.last_seen
            self.last_seen = grown
        np.maximum.at(self.last_seen, item[has_ts], ts[has_ts])
        if has_ts.any():
            self.latest = max(self.latest, int(ts[has_ts].max()))

    def _add_weighted(
        self,
        user: np.ndarray,
        item: np.ndarray,
        weight: np.ndarray,
        ts: np.ndarray,
        has_ts: np.ndarray,
    ) -> None:
        # Events without a time are taken as current: they get no decay.
        self.weighted.add(user[~has_ts], item[~has_ts], weight[~has_ts])
        user, item, weight, ts = user[has_ts], item[has_ts], weight[has_ts], ts[has_ts]
        if self.half_life_ms is None or not len(ts):
            self.weighted.add(user, item, weight)
        elif self.reference_ms is not None:
            # Events after the reference time count in full rather than growing.
            age = np.maximum(self.reference_ms - ts, 0)
            self.weighted.add(user, item, weight * 0.5 ** (age / self.half_life_ms))
        else:
            anchor = float(ts.max())
            self.weighted.add(
                user, item, weight * 0.5 ** ((anchor - ts) / self.half_life_ms), anchor
            )

    def finish(self) -> InteractionMatrix:
        n_users, n_items = len(self.users), len(self.items)
        reference = self.reference_ms if self.reference_ms is not None else self.latest
        reference_ms = None if reference == NAT else float(reference)
        self._track_time(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
        weighted = self.weighted.to_csr((n_users, n_items), reference_ms)
        weighted.eliminate_zeros()  # zero-weight events (remove_from_cart) say nothing
        last_day = 0 if self.latest == NAT else self.latest // MS_PER_DAY
        baskets = self.baskets.finish(n_items)
        return InteractionMatrix(
            matrix=weighted,
            counts=self.counts.to_csr((n_users, n_items), None),
            user_ids=self.users.array(),
            item_ids=self.items.array(),
            reference_time=None
            if reference_ms is None
            else pd.Timestamp(int(reference), unit="ms", tz="UTC"),
            item_last_seen=self.last_seen.view("datetime64[ms]"),
            item_daily=self.daily.to_csr((n_items, int(last_day) + 1), None),
            baskets=baskets if baskets.shape[0] else None,
            weights=dict(self.weights),
            half_life_days=self.half_life_days,
            unknown_event_types=dict(self.unknown),
            ratings=self.ratings,
        )


def _event_weights(
    event_types: np.ndarray, weights: Mapping[str, float], unknown: dict[str, int]
) -> np.ndarray:
    mapped = pd.Series(event_types).map(weights)
    missing = mapped.isna().to_numpy()
    if missing.any():
        for name, n in pd.Series(event_types[missing]).value_counts().items():
            unknown[str(name)] = unknown.get(str(name), 0) + int(n)
    return np.array(mapped.fillna(0.0), dtype=np.float64)  # writable: ratings may scale it


def _columns(
    batch: Batch,
    time_unit: str | None,
    required: Sequence[str] = ("item_id", "event_type", "timestamp"),
    optional: Sequence[str] = ("user_id", "order_id", "session_id"),
) -> dict[str, np.ndarray]:
    """The columns the build reads, as numpy arrays; timestamps as int64 ms (NaT for none)."""
    frame = batch if isinstance(batch, pd.DataFrame) else batch.to_pandas()
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"interactions lack column(s) {', '.join(missing)}")
    cols: dict[str, np.ndarray] = {}
    for name in (*required, *optional):
        if name in frame.columns and name != "timestamp":
            cols[name] = frame[name].to_numpy(dtype=object, na_value=None)
    for name in ("item_id", "event_type"):
        if name in required and pd.isna(cols[name]).any():
            raise DataError(f"{int(pd.isna(cols[name]).sum())} interaction rows have no {name}")
    if "user_id" in optional and "user_id" not in cols:
        cols["user_id"] = np.full(len(frame), None, dtype=object)
    if "timestamp" in required:
        cols["timestamp"] = _timestamps_ms(frame["timestamp"], time_unit)
    return cols


def _timestamps_ms(values: pd.Series, time_unit: str | None) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if time_unit is None:
            raise DataError("timestamp is numeric: pass time_unit ('s' or 'ms') or give datetimes")
        values = pd.to_datetime(values, unit=time_unit, utc=True)
    elif not isinstance(values.dtype, pd.DatetimeTZDtype):
        try:
            values = pd.to_datetime(values, utc=True)
        except (ValueError, TypeError) as exc:
            raise DataError(f"timestamp cannot be read as a time: {exc}") from None
    naive = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy(dtype="datetime64[ms]").view(np.int64)


def _utc(moment: pd.Timestamp | None) -> pd.Timestamp | None:
    if moment is None:
        return None
    moment = pd.Timestamp(moment)
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
