"""Serving parts without a server: online state, API keys, event validation, candidate merge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import scipy.sparse as sp

from nextbuy.config import Settings
from nextbuy.data.matrix import InteractionMatrix, build_matrix
from nextbuy.datasets import load_sample_shop
from nextbuy.errors import DataError, NotFoundError
from nextbuy.models import create_model
from nextbuy.models.base import history_row
from nextbuy.rules.catalog import ItemCatalog
from nextbuy.server.run import check_host
from nextbuy.serving.candidates import merge
from nextbuy.serving.erasures import Erasures
from nextbuy.serving.events import EventErrors, checked_rows, clean_rows, parse_body, validate
from nextbuy.serving.keys import KeyStore
from nextbuy.serving.online import OnlineEvent, OnlineState
from nextbuy.serving.profiles import Profiles
from nextbuy.serving.recommend import list_scores
from nextbuy.serving.segment import Segment
from nextbuy.store.sqlite import SQLiteStore


def event(item: str, ts: int, key: int, kind: str = "view") -> OnlineEvent:
    return OnlineEvent(item, kind, 1.0, ts, key)


def test_online_state_counts_an_event_once_keeps_the_latest_and_forgets_old_shoppers() -> None:
    state = OnlineState(max_keys=2, max_events=3)
    state.add("u:a", [event("i1", 10, 1), event("i1", 10, 1), event("i2", 30, 2)])
    state.add("u:a", [event("i3", 20, 3), event("i4", 40, 4)])
    assert [e.item_id for e in state.events("u:a")] == ["i3", "i2", "i4"]  # by time
    assert [e.item_id for e in state.events("u:a", since_ms=25)] == ["i2", "i4"]
    state.add("u:b", [event("i1", 1, 5)])
    state.add("u:a", [event("i5", 50, 6)])  # a is now the most recently active
    state.add("s:c", [event("i1", 1, 7)])
    assert state.has("u:a") and state.has("s:c") and not state.has("u:b")
    assert state.forget("u:a") and state.events("u:a") == []


def test_keys_are_shown_once_stored_hashed_and_checked_with_their_scopes(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "store.db")
    assert not keys.any_keys()
    made, secret = keys.create("storefront", ["read"])
    assert secret.startswith(f"nbk_{made.key_id}_")
    assert keys.any_keys()
    assert secret.split("_", 2)[2] not in (tmp_path / "store.db").read_bytes().decode("latin-1")
    found = keys.verify(secret)
    assert found is not None and found.allows("read") and not found.allows("write")
    assert keys.verify(secret[:-1] + ("x" if secret[-1] != "x" else "y")) is None
    assert keys.verify("nbk_nothere_abc") is None and keys.verify("garbage") is None
    _, admin_secret = keys.create("ops", ["admin"])
    assert keys.verify(admin_secret).allows("write")  # type: ignore[union-attr]
    with pytest.raises(DataError, match="not one of"):
        keys.create("x", ["superuser"])
    assert keys.revoke("storefront") == 1 and keys.verify(secret) is None
    with pytest.raises(NotFoundError):
        keys.revoke("storefront")


def test_development_mode_listens_on_localhost_only() -> None:
    check_host("127.0.0.1", development=True)
    check_host("0.0.0.0", development=False)
    with pytest.raises(Exception, match="no API key exists"):
        check_host("0.0.0.0", development=True)


def test_erasures_suppress_only_models_trained_before_the_erasure(tmp_path: Path) -> None:
    erasures = Erasures(tmp_path / "store.db")
    erasures.record("u1")
    assert erasures.suppressed("u1", trained_at_ms=0)
    assert not erasures.suppressed("u1", trained_at_ms=2**62)
    assert not erasures.suppressed("u2", trained_at_ms=0)
    assert Erasures(tmp_path / "store.db").suppressed("u1", 0)  # survives a restart


def test_api_events_get_the_import_checks_and_server_time(settings: Settings) -> None:
    events, batched = parse_body(b'{"user_id": "u", "item_id": 42, "event_type": "view"}', 10)
    assert not batched
    rows = validate(events, settings)
    assert rows.loc[0, "item_id"] == "42" and pd.notna(rows.loc[0, "timestamp"])
    assert rows["event_key"].notna().all()
    body = b'{"events": [{"user_id": "u", "item_id": "i", "event_type": "view", "quantity": -1}]}'
    with pytest.raises(EventErrors) as bad:
        validate(parse_body(body, 10)[0], settings)
    assert bad.value.detail[0]["loc"] == ["body", "events", 0, "quantity"]
    with pytest.raises(EventErrors) as too_many:
        parse_body(
            b'{"events": [' + b",".join([b'{"item_id":"i","event_type":"v"}'] * 3) + b"]}", 2
        )
    assert too_many.value.detail[0]["msg"] == "at most 2 events per request"


def test_the_quick_path_for_clean_events_types_them_exactly_as_the_import_does(
    settings: Settings,
) -> None:
    rng = np.random.default_rng(3)
    kinds = sorted(settings.events.known_types())
    events = []
    for i in range(300):
        event = {
            "item_id": [f" sku-{i} ", 1000 + i, float(i)][i % 3],
            "event_type": kinds[i % len(kinds)],
            "timestamp": [None, 1_700_000_000 + i, 1_700_000_000_123.0 + i, 1.7e9 + 0.5][i % 4],
        }
        if i % 9 == 0:  # plain ISO 8601, as trackers send it
            event["timestamp"] = [
                f"2026-11-{1 + i % 28:02d}T10:{i % 60:02d}:05Z",
                f"2024-02-29T23:59:59.{i:03d}+05:30",
                f"2025-06-30 00:00:00.{i:06d}",
                f"1970-01-01T00:00:00.{i % 10}-01:00",
                f"2031-12-31T23:59:{i % 60:02d}.999999Z",
                f"1970-01-01T00:30:00.{i:04d}5+01:00",  # before 1970 in UTC: floored
            ][(i // 9) % 6]
        if i % 5:
            event["user_id"] = f"u{i % 17}"
        if i % 5 == 0 or i % 7 == 0:
            event["session_id"] = f"s-{i}"
        if i % 3 == 0:
            event["value"] = float(rng.normal(10, 5))
        if i % 4 == 0:
            event["quantity"] = float(rng.integers(0, 5))
        if i % 6 == 0:
            event["context"] = {"device": "mobile", "n": i, "nested": {"x": [1, 2.5]}}
        if i % 8 == 0:
            event["order_id"], event["event_id"] = f"o{i}", i
        events.append(event)
    parsed = parse_body(orjson.dumps({"events": events}), 1000)[0]
    quick = clean_rows(parsed, settings, now_ms=1_750_000_000_000)
    assert quick is not None
    reference = checked_rows(parsed, settings, now_ms=1_750_000_000_000)
    pd.testing.assert_frame_equal(quick, reference)
    for odd in (
        {"item_id": "i", "event_type": "view", "session_id": "s", "timestamp": "2024-01-01"},
        {"item_id": "i", "event_type": "view", "user_id": "u", "timestamp": "2024-13-01T00:00:00"},
        {"item_id": "i", "event_type": "view", "user_id": "u", "timestamp": "1969-12-31T23:59:59"},
        {"item_id": "i", "event_type": "view", "user_id": "u", "timestamp": "yesterday"},
        {"item_id": "i", "event_type": "teleport", "user_id": "u"},
        {"item_id": " ", "event_type": "view", "user_id": "u"},
        {"item_id": "i", "event_type": "view"},
        {"item_id": "i", "event_type": "view", "user_id": "u", "quantity": -1},
        {"item_id": "i" * 300, "event_type": "view", "user_id": "u"},
    ):
        assert clean_rows(parse_body(orjson.dumps(odd), 10)[0], settings, 0) is None, odd


def test_api_events_without_event_id_never_share_a_key(settings: Settings) -> None:
    one = b'{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": 1700000000}'
    body = b'{"events": [' + b",".join([one] * 10) + b"]}"
    keys = set()
    for _ in range(5):  # same content, same position in the batch, other requests
        keys |= set(validate(parse_body(body, 10)[0], settings)["event_key"].tolist())
    assert len(keys) == 50


def test_load_time_reads_survive_optional_json_columns_null_on_some_rows(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    try:
        store.upsert_users(
            pd.DataFrame(
                {
                    "user_id": ["a", "b", "c"],
                    "consent": [True, True, False],
                    "onboarding": [None, '{"categories": ["Garden"]}', None],
                }
            )
        )
        store.upsert_items(pd.DataFrame({"item_id": ["i1", "i2"], "tags": [None, '["sale"]']}))
        profiles = store.serving_profiles()
        assert sorted(profiles["user_id"]) == ["b", "c"]  # only profiles that change answers
        book = Profiles.from_frame(profiles)
        assert book.get("b").onboarding.categories == ("Garden",)  # type: ignore[union-attr]
        assert book.get("c").consent is False and book.get("a") is None  # type: ignore[union-attr]
        items = store.serving_items().set_index("item_id")
        assert items.loc["i2", "tags"] == ["sale"] and items.loc["i1", "tags"] is None
    finally:
        store.close()


class _Live:
    """Just what `merge` reads of a Live."""

    def __init__(self, catalog: ItemCatalog) -> None:
        self.catalog = catalog


def test_merge_keeps_each_item_once_skips_unavailable_and_keeps_segments_in_order() -> None:
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)], "available": [True] * 10})
    catalog = ItemCatalog.from_frame(items, [f"i{i}" for i in range(10)]).remove("i3")
    personal = Segment(np.array([5, 3, 1]), np.array([-2.0, -3.0, -9.0]), "personal")
    trending = Segment(np.array([1, 2, 4, 6, 7]), np.array([9.0, 8, 7, 6, 5]), "trending")
    merged = merge(_Live(catalog), [personal, trending], n=6, exclude=np.array([2]))  # type: ignore[arg-type]
    cands = merged.cands
    assert cands.items.tolist() == [5, 1, 4, 6, 7]
    assert list(cands.origin) == ["personal", "personal", "trending", "trending", "trending"]
    assert np.all(np.diff(cands.scores) < 0) and 0 <= cands.scores.min() <= cands.scores.max() <= 1


@pytest.fixture(scope="module")
def small_matrix() -> InteractionMatrix:
    events = load_sample_shop().interactions.iloc[:20_000]
    return build_matrix([events], {"purchase": 1.0}, None)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ease", {"reg": 100.0}),
        ("als", {"factors": 8, "iterations": 3, "use_gpu": False, "alpha": 2.0}),
        ("bpr", {"factors": 8, "iterations": 5, "use_gpu": False}),
        ("bpr", {"factors": 8, "iterations": 5, "use_gpu": False, "fold_in": "least_squares"}),
        ("itemknn", {"neighbours": 20}),
        ("fbt", {}),
        ("trending", {}),
    ],
)
@pytest.mark.parametrize("hot", [False, True])
def test_pool_scores_equal_the_models_own_scores(
    small_matrix: InteractionMatrix, name: str, params: dict, hot: bool
) -> None:
    model = create_model(name, **params).fit(small_matrix)
    # a hot block that covers part of the pool and items outside it
    hot_items = np.arange(small_matrix.n_items)[::-3][:50] if hot else None
    if hot_items is not None:
        model.keep_contiguous(hot_items)
    pool = np.arange(0, small_matrix.n_items, 2)
    for user in range(0, 60, 7):
        row = small_matrix.matrix[user]
        cols, vals = row.indices.astype(np.int64), row.data
        # the same item twice (trained row + a new event) counts as its summed weight
        cols, vals = np.append(cols, cols[:1]), np.append(vals, np.float32(1.0))
        full = model.score(history_row(model.n_items, cols, vals))[0][pool]
        mine = model.pool_scores(cols, vals, pool)
        assert np.array_equal(np.isfinite(full), np.isfinite(mine))
        finite = np.isfinite(full)
        np.testing.assert_allclose(mine[finite], full[finite], rtol=2e-4, atol=2e-5)


def test_api_event_keys_increase_and_never_meet_file_or_event_id_keys() -> None:
    from nextbuy.ingest.run import API_KEY_BIT, HASHED_KEY_BIT, event_keys
    from nextbuy.serving.events import ApiKeys

    keys = ApiKeys()
    # more than one millisecond's worth of keys: the counter rolls into the next one
    taken = np.concatenate([keys.take(1500), keys.take(1500)])
    assert (np.diff(taken) > 0).all()
    assert ((taken >= API_KEY_BIT) & (taken < HASHED_KEY_BIT)).all()
    lines = pd.DataFrame({"line": [2, 3], "event_id": [None, "e-1"]})
    file_key, id_key = event_keys(lines, file_id=12345)
    assert file_key < API_KEY_BIT <= HASHED_KEY_BIT <= id_key


def test_cells_and_row_products_equal_scipys_fancy_indexing() -> None:
    from nextbuy.hybrid.request_reasons import cells, row_products

    rng = np.random.default_rng(0)
    dense = sp.random(200, 150, density=0.05, random_state=1, dtype=np.float32).toarray()
    dense[7] = 0  # a row without entries
    matrix = sp.csr_matrix(dense)
    rows = np.concatenate([rng.choice(200, 12), [7]])
    cols = rng.choice(150, 6, replace=False)
    np.testing.assert_allclose(cells(matrix, rows, cols), matrix[rows][:, cols].toarray())
    others = np.asarray([3, 7, 50, 120])
    expected = (matrix[rows] @ matrix[others].T).toarray()
    np.testing.assert_allclose(row_products(matrix, rows, others), expected, rtol=1e-6)


def test_occlusion_skips_features_no_tree_splits_on_with_the_same_contributions() -> None:
    import lightgbm as lgb

    from nextbuy.hybrid.request_reasons import occlusion_contributions

    rng = np.random.default_rng(3)
    train = rng.normal(size=(400, 4))
    train[:, 2] = 1.0  # constant while training: no tree can split on it
    target = 2 * train[:, 0] - train[:, 1] + 0.1 * rng.normal(size=400)
    params = {"verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(train, target), num_boost_round=20)
    split = booster.feature_importance("split") > 0
    assert not split[2] and split[0] and split[1]
    x = rng.normal(size=(10, 4))  # the unsplit feature varies between these rows
    baseline = x.mean(axis=0)

    class Counted:
        rows = 0

        def predict(self, data: np.ndarray, **options: object) -> np.ndarray:
            Counted.rows += len(data)
            return booster.predict(data, **options)

    every = occlusion_contributions(Counted(), x, baseline, None)
    copied, Counted.rows = Counted.rows, 0
    skipped = occlusion_contributions(Counted(), x, baseline, None, split)
    np.testing.assert_array_equal(skipped, every)
    assert (every[:, 2] == 0).all() and (every[:, 0] != 0).any()
    assert Counted.rows == copied - len(x)  # one copy of each row fewer: feature 2's


def test_list_scores_put_boosted_and_placed_items_on_the_one_scale() -> None:
    boosted = list_scores(np.array([1.5, 0.9, 0.3]))  # a boost lifted the first past 1
    np.testing.assert_allclose(boosted, [1.0, 0.6, 0.2])
    placed = list_scores(np.array([0.8, 0.95, 0.1, np.nan]))  # a promotion placed the first
    np.testing.assert_allclose(placed, [0.8, 0.8, 0.1, 0.0])
    assert list_scores(np.zeros(0)).shape == (0,)
