"""The training matrix: weights, decay, id maps, bounded-memory batching, baskets, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import nextbuy.data.matrix as matrix_module
from nextbuy.data.matrix import InteractionMatrix, build_basket_matrix, build_matrix, from_frame
from nextbuy.errors import DataError
from nextbuy.store.base import INTERACTION_ARROW_SCHEMA

WEIGHTS = {"view": 1.0, "purchase": 4.0, "remove_from_cart": 0.0}
DAY0 = pd.Timestamp("2024-05-10 12:00", tz="UTC")


def events(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (user, item, event_type, days before DAY0 or None[, order, session])."""
    cols = ["user_id", "item_id", "event_type", "age", "order_id", "session_id"]
    frame = pd.DataFrame([r + (None,) * (6 - len(r)) for r in rows], columns=cols)
    age = pd.to_timedelta(frame.pop("age").astype(float), unit="D")
    frame.insert(3, "timestamp", DAY0 - age)
    return frame


def as_batches(frame: pd.DataFrame, size: int) -> list[pa.RecordBatch]:
    """The frame as store batches (INTERACTION_ARROW_SCHEMA), `size` rows each."""
    full = frame.reindex(columns=INTERACTION_ARROW_SCHEMA.names)
    full["event_key"] = np.arange(len(full))
    full["timestamp"] = full["timestamp"].astype("datetime64[ms, UTC]")
    table = pa.Table.from_pandas(full, schema=INTERACTION_ARROW_SCHEMA, preserve_index=False)
    return table.to_batches(max_chunksize=size)


def dense(data: InteractionMatrix) -> dict[tuple[str, str], float]:
    coo = data.matrix.tocoo()
    return {
        (str(data.user_ids[r]), str(data.item_ids[c])): float(v)
        for r, c, v in zip(coo.row, coo.col, coo.data, strict=True)
    }


def test_decay_halves_the_weight_per_half_life() -> None:
    frame = events([("u", "a", "purchase", 0), ("u", "b", "purchase", 1), ("u", "c", "view", 2)])
    data = build_matrix([frame], WEIGHTS, half_life_days=1.0)
    assert data.reference_time == DAY0
    assert dense(data) == pytest.approx({("u", "a"): 4.0, ("u", "b"): 2.0, ("u", "c"): 0.25})


def test_repeated_events_are_summed_after_decay() -> None:
    frame = events([("u", "a", "purchase", 0), ("u", "a", "view", 1), ("v", "a", "view", 1)])
    data = build_matrix([frame], WEIGHTS, half_life_days=1.0)
    assert dense(data) == pytest.approx({("u", "a"): 4.5, ("v", "a"): 0.5})
    assert data.counts.toarray().tolist() == [[2.0], [1.0]]


def test_explicit_reference_time_and_events_after_it() -> None:
    frame = events([("u", "a", "view", 2), ("u", "b", "view", -3)])
    data = build_matrix([frame], WEIGHTS, half_life_days=2.0, reference_time=DAY0)
    # b happened after the reference time: it counts in full instead of growing
    assert dense(data) == pytest.approx({("u", "a"): 0.5, ("u", "b"): 1.0})


def test_no_half_life_means_plain_weights_and_untimed_events_do_not_decay() -> None:
    frame = events([("u", "a", "view", 30), ("u", "b", "purchase", None)])
    assert dense(build_matrix([frame], WEIGHTS, None)) == {("u", "a"): 1.0, ("u", "b"): 4.0}
    decayed = build_matrix([frame], WEIGHTS, half_life_days=10.0)
    assert dense(decayed) == pytest.approx({("u", "a"): 1.0, ("u", "b"): 4.0})


def test_unknown_event_types_weigh_nothing_but_are_counted() -> None:
    frame = events([("u", "a", "view", 0), ("u", "b", "teleport", 0), ("u", "b", "teleport", 0)])
    data = build_matrix([frame], WEIGHTS, None)
    assert data.unknown_event_types == {"teleport": 2}
    assert dense(data) == {("u", "a"): 1.0}
    assert data.counts[0, data.item_index["b"]] == 2.0


def test_rows_without_user_count_for_items_but_not_for_users() -> None:
    frame = events([("u", "a", "view", 0), (None, "b", "view", 0, None, "s1")])
    data = build_matrix([frame], WEIGHTS, None)
    assert list(data.user_ids) == ["u"]
    assert list(data.item_ids) == ["a", "b"]
    assert data.item_daily is not None and data.item_daily.sum(axis=1).tolist() == [[1.0], [1.0]]
    assert data.baskets is not None and data.baskets.shape == (1, 2)


def test_id_maps_are_stable_across_builds() -> None:
    first = events([("u", "a", "view", 1), ("v", "b", "view", 1), ("u", "c", "view", 0)])
    one, two = (build_matrix([first], WEIGHTS, None) for _ in range(2))
    assert list(one.item_ids) == list(two.item_ids) == ["a", "b", "c"]
    assert list(one.user_ids) == list(two.user_ids) == ["u", "v"]
    later = events([("w", "d", "view", 0), ("w", "b", "view", 0)])
    grown = build_matrix([later], WEIGHTS, None, item_ids=list(one.item_ids))
    assert list(grown.item_ids) == ["a", "b", "c", "d"]
    assert grown.matrix.shape == (1, 4)
    with pytest.raises(DataError, match="repeats"):
        build_matrix([later], WEIGHTS, None, item_ids=["a", "a"])


def test_store_batches_give_the_same_matrix_as_one_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    n = 400
    frame = events(
        [
            (f"u{rng.integers(30)}", f"i{rng.integers(25)}", str(t), float(age))
            for t, age in zip(
                rng.choice(["view", "purchase"], n), rng.uniform(0, 40, n), strict=True
            )
        ]
    )
    whole = build_matrix([frame], WEIGHTS, half_life_days=7.0)
    # Tiny compaction threshold: the decayed parts are merged many times along the way.
    monkeypatch.setattr(matrix_module, "_COMPACT_MIN", 50)
    pieces = build_matrix(as_batches(frame, 37), WEIGHTS, half_life_days=7.0)
    assert list(pieces.item_ids) == list(whole.item_ids)
    assert list(pieces.user_ids) == list(whole.user_ids)
    assert pieces.reference_time == whole.reference_time
    np.testing.assert_allclose(pieces.matrix.toarray(), whole.matrix.toarray(), rtol=1e-5)
    np.testing.assert_array_equal(pieces.counts.toarray(), whole.counts.toarray())
    assert pieces.matrix.dtype == np.float32


def test_rows_and_history_vector() -> None:
    data = build_matrix([events([("u", "a", "view", 0), ("v", "b", "purchase", 0)])], WEIGHTS, None)
    rows = data.rows(["v", "nobody", "u"]).toarray()
    assert rows.tolist() == [[0.0, 4.0], [0.0, 0.0], [1.0, 0.0]]
    assert data.history_vector({"b": 2.0, "new-item": 5.0}).toarray().tolist() == [[0.0, 2.0]]


def test_item_last_seen_and_daily_totals() -> None:
    frame = events([("u", "a", "view", 3), ("v", "a", "purchase", 1), ("u", "b", "view", None)])
    data = build_matrix([frame], WEIGHTS, None)
    assert data.item_last_seen is not None
    assert pd.Timestamp(data.item_last_seen[0], tz="UTC") == DAY0 - pd.Timedelta(days=1)
    assert np.isnat(data.item_last_seen[1])
    assert data.item_daily is not None
    day = (DAY0 - pd.Timedelta(days=1)).value // 86_400_000_000_000
    assert data.item_daily[0, day] == 4.0


def test_baskets_prefer_the_order_and_fall_back_to_the_session() -> None:
    frame = events(
        [
            ("u", "a", "purchase", 0, "o1", "s1"),
            ("u", "b", "purchase", 0, "o1", "s1"),
            ("u", "c", "view", 0, None, "s1"),  # same session, no order: its own basket
            ("v", "a", "view", 0, None, None),  # neither: in no basket
            ("v", "c", "remove_from_cart", 0, "o2", None),  # weight 0: not a basket item
        ]
    )
    data = build_matrix([frame], WEIGHTS, None)
    assert data.baskets is not None
    assert sorted(map(tuple, data.baskets.toarray().tolist())) == [(0, 0, 1), (1, 1, 0)]
    baskets, ids = build_basket_matrix([frame], weights=WEIGHTS)
    assert list(ids) == ["a", "b", "c"]
    assert (baskets != data.baskets).nnz == 0
    by_session, _ = build_basket_matrix([frame], key="session_id", fallback=None)
    assert by_session.toarray().tolist() == [[1, 1, 1]]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    frame = events([("u", "a", "view", 2, "o1"), ("v", "b", "purchase", 0, "o1")])
    data = build_matrix([frame], WEIGHTS, half_life_days=3.0)
    data.save(tmp_path / "m")
    back = InteractionMatrix.load(tmp_path / "m")
    assert (back.matrix != data.matrix).nnz == 0
    assert (back.counts != data.counts).nnz == 0
    assert list(back.user_ids) == ["u", "v"] and back.item_index == data.item_index
    assert back.reference_time == data.reference_time
    assert back.half_life_days == 3.0 and back.weights == WEIGHTS
    np.testing.assert_array_equal(back.item_last_seen, data.item_last_seen)
    assert back.baskets is not None and (back.baskets != data.baskets).nnz == 0


def test_input_errors_are_data_errors() -> None:
    numeric = pd.DataFrame(
        {"user_id": ["u"], "item_id": ["a"], "event_type": ["view"], "timestamp": [1_700_000_000]}
    )
    with pytest.raises(DataError, match="time_unit"):
        from_frame(numeric)
    assert from_frame(numeric, time_unit="s").reference_time == pd.Timestamp(
        1_700_000_000, unit="s", tz="UTC"
    )
    with pytest.raises(DataError, match="event_type"):
        from_frame(numeric.drop(columns="event_type"), time_unit="s")
    with pytest.raises(DataError, match="no item_id"):
        from_frame(numeric.assign(item_id=[None]), time_unit="s")
