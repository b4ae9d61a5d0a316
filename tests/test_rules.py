"""Business rules: each rule alone, their combinations, the catalogue, placements config."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from nextbuy.config import load_settings
from nextbuy.errors import ConfigError, NotFoundError
from nextbuy.rules import (
    DEFAULT_PLACEMENTS,
    Candidates,
    ItemCatalog,
    PlacementConfig,
    RequestContext,
    RuleConfig,
    apply_rules,
    build_rules,
)
from nextbuy.rules.base import Filter
from nextbuy.rules.catalog import DAY_MS
from nextbuy.rules.diversity import Diversity
from nextbuy.rules.filters import ExcludePurchased

NOW = 1_700_000_000_000.0
NAN = math.nan

# id, category, brand, price, margin, available, stock, age in days
ROWS: list[tuple[Any, ...]] = [
    ("s1", "Shoes > Running", "Nike", 90.0, 0.30, True, 5, 400),
    ("s2", "Shoes > Running", "Adidas", 120.0, 0.20, True, 5, 3),
    ("s3", "Shoes > Trail", "Nike", 60.0, 0.50, True, 0, 100),  # out of stock
    ("s4", "Shoes", "Puma", 40.0, NAN, True, NAN, NAN),
    ("s5", "Shoes > Running", "Nike", 150.0, 0.10, False, 5, 10),  # unlisted
    ("s6", "shoes>running ", "nike ", 95.0, 0.25, True, 5, 200),  # untidy spelling
    ("b1", "Bags", "Nike", 30.0, 0.40, True, 5, 50),
    ("b2", "Bags > Small", "Eastpak", 25.0, 0.35, True, 5, 1),
    ("b3", "Bags", "Eastpak", 80.0, 0.05, True, 5, 300),
    ("h1", "Hats", "Nike", 20.0, 0.60, True, 5, 500),
    ("h2", "Hats", "Puma", 22.0, 0.10, True, 5, 5),
    ("h3", "Hats > Caps", "Puma", 18.0, 0.15, True, 5, 900),
    ("t1", "Toys", "Lego", 50.0, 0.20, True, 5, 60),
    ("t2", "Toys", "Lego", 55.0, 0.20, True, 5, 70),
    ("t3", "Toys > Outdoor", "Hasbro", 35.0, 0.30, True, 5, 80),
    ("g1", "Garden > Tools", "Bosch", 200.0, 0.10, True, 5, 90),
    ("g2", "Garden", "Bosch", 12.0, 0.45, True, 5, 2),
    ("x1", "Shoelaces", "Generic", 3.0, 0.70, True, 5, 20),  # "Shoes" must not match it
    ("n1", None, None, NAN, NAN, True, NAN, NAN),  # nothing known
]
IDS = [r[0] for r in ROWS]


def items_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": IDS,
            "title": [f"Item {i}" for i in IDS],
            "category": [r[1] for r in ROWS],
            "brand": [r[2] for r in ROWS],
            "price": [r[3] for r in ROWS],
            "margin": [r[4] for r in ROWS],
            "available": [r[5] for r in ROWS],
            "stock": [r[6] for r in ROWS],
            "created_at": pd.array(
                [None if math.isnan(r[7]) else int(NOW - r[7] * DAY_MS) for r in ROWS],
                dtype="Int64",
            ),
            "tags": [["sale"] if i in ("s1", "h1") else [] for i in IDS],
        }
    )


@pytest.fixture(scope="module")
def catalog() -> ItemCatalog:
    return ItemCatalog.from_frame(items_frame(), IDS)


def cands_for(catalog: ItemCatalog, ids: list[str] | None = None) -> Candidates:
    """Candidates in the given order (default: the catalogue's), scores falling from 100."""
    ids = IDS if ids is None else ids
    items = np.array([catalog.index[i] for i in ids], np.int64)
    return Candidates.from_scores(items, 100.0 - np.arange(len(items)))


def ctx(k: int = 10, **kw: Any) -> RequestContext:
    return RequestContext(user_id="u1", now_ms=NOW, k=k, **kw)


def rules(*configs: dict[str, Any]) -> list[Any]:
    adapter = TypeAdapter(list[RuleConfig])
    return build_rules(adapter.validate_python(list(configs)))


def run(catalog: ItemCatalog, *configs: dict[str, Any], k: int = 10, **kw: Any) -> Candidates:
    cands = kw.pop("cands", None) or cands_for(catalog)
    return apply_rules(rules(*configs), ctx(k, **kw), cands, catalog)


def ids(catalog: ItemCatalog, out: Candidates) -> list[str]:
    return [str(i) for i in catalog.item_ids[out.items]]


def top_of(catalog: ItemCatalog, item: str) -> str | None:
    return catalog.top_category[catalog.index[item]]


# -- catalogue ------------------------------------------------------------------------------
def test_catalog_puts_model_items_first_then_catalogue_only_items() -> None:
    model_order = ["h1", "ghost", "s1"]
    catalog = ItemCatalog.from_frame(items_frame(), model_order)
    assert list(catalog.item_ids[:3]) == model_order
    assert sorted(catalog.item_ids[3:]) == sorted(set(IDS) - {"h1", "s1"})
    ghost = catalog.index["ghost"]  # known to the model, not to the catalogue
    assert catalog.available[ghost] and math.isnan(catalog.price[ghost])
    assert catalog.category[ghost] is None and catalog.category_code[ghost] == -1


def test_catalog_normalises_paths_and_reads_stock(catalog: ItemCatalog) -> None:
    s6 = catalog.index["s6"]
    assert catalog.category[s6] == "shoes > running"
    assert catalog.top_category[s6] == "shoes"
    assert catalog.brand[s6] == "nike"
    assert not catalog.available[catalog.index["s3"]]  # flag set but stock 0
    assert not catalog.available[catalog.index["s5"]]
    assert catalog.available[catalog.index["s4"]]  # unknown stock is not "none left"
    codes = catalog.category_code
    assert codes[catalog.index["s1"]] == codes[catalog.index["s2"]] >= 0
    assert catalog.category_vocab[codes[catalog.index["g1"]]] == "Garden > Tools"
    assert catalog.created_at_ms[catalog.index["s2"]] == NOW - 3 * DAY_MS
    assert catalog.tags[catalog.index["s1"]] == ("sale",)


def test_catalog_reads_creation_times_in_any_form() -> None:
    jan1 = 1_704_067_200_000.0
    forms = [
        pd.array([int(jan1), None], dtype="Int64"),  # the store's UTC milliseconds
        pd.to_datetime(["2024-01-01", None]),
        pd.to_datetime(["2024-01-01 01:00", None]).tz_localize("Europe/Berlin"),
        ["2024-01-01T00:00:00Z", "not a time"],
    ]
    for form in forms:
        catalog = ItemCatalog.from_frame(
            pd.DataFrame({"item_id": ["a", "b"], "created_at": form}), []
        )
        assert catalog.created_at_ms[0] == jan1 and math.isnan(catalog.created_at_ms[1]), form


def test_catalog_without_an_item_table_knows_only_ids() -> None:
    catalog = ItemCatalog.from_frame(None, ["a", "b"])
    assert list(catalog.item_ids) == ["a", "b"] and catalog.available.all()
    assert (catalog.category_code == -1).all() and len(catalog.category_vocab) == 0
    out = run(
        catalog,
        {"type": "categories", "exclude": ["Shoes"]},
        {"type": "diversity"},
        cands=Candidates.from_scores(np.array([0, 1]), np.array([1.0, 2.0])),
    )
    assert list(catalog.item_ids[out.items]) == ["b", "a"]


def test_upsert_returns_a_new_catalogue_and_leaves_the_old_one_alone(
    catalog: ItemCatalog,
) -> None:
    old_price = catalog.price.copy()
    changed = catalog.upsert(
        pd.DataFrame({"item_id": ["s1", "new"], "price": [1.0, 2.0], "category": ["Toys", "Pets"]})
    )
    np.testing.assert_array_equal(catalog.price, old_price)
    assert len(changed) == len(catalog) + 1 and changed.index["new"] == len(catalog)
    s1 = changed.index["s1"]
    assert changed.price[s1] == 1.0 and changed.category[s1] == "Toys"
    assert changed.top_category[s1] == "Toys"
    assert changed.brand[s1] == "Nike"  # a column the update did not carry is kept
    assert changed.category_vocab[changed.category_code[s1]] == "Toys"
    new = changed.index["new"]
    assert changed.category_vocab[changed.category_code[new]] == "Pets"
    assert changed.available[new] and changed.brand[new] is None


def test_upsert_restocking_makes_an_item_available_again(catalog: ItemCatalog) -> None:
    restocked = catalog.upsert(pd.DataFrame({"item_id": ["s3"], "stock": [4.0]}))
    assert restocked.available[restocked.index["s3"]]
    assert not catalog.available[catalog.index["s3"]]


def test_cached_masks_follow_upserts(catalog: ItemCatalog) -> None:
    fresh = ItemCatalog.from_frame(items_frame(), IDS)
    keep = rules({"type": "categories", "include": ["Toys"]})
    everything = cands_for(fresh)
    before = apply_rules(keep, ctx(k=30), everything, fresh)
    assert ids(fresh, before) == ["t1", "t2", "t3"]
    moved = fresh.upsert(pd.DataFrame({"item_id": ["t1", "z"], "category": ["Garden", "Toys"]}))
    after = apply_rules(keep, ctx(k=30), cands_for(moved, [*IDS, "z"]), moved)
    assert ids(moved, after) == ["t2", "t3", "z"]


def test_remove_marks_unavailable_and_keeps_indices(catalog: ItemCatalog) -> None:
    gone = catalog.remove("h1")
    assert gone.index == catalog.index
    assert not gone.available[gone.index["h1"]] and catalog.available[catalog.index["h1"]]
    assert "h1" not in ids(gone, run(gone, {"type": "exclude_unavailable"}, k=30))
    with pytest.raises(NotFoundError):
        catalog.remove("nope")


# -- filters, each alone --------------------------------------------------------------------
def test_exclude_purchased_within_days(catalog: ItemCatalog) -> None:
    bought = {catalog.index["s1"]: NOW - 5 * DAY_MS, catalog.index["s2"]: NOW - 60 * DAY_MS}
    month = ids(
        catalog, run(catalog, {"type": "exclude_purchased", "days": 30}, k=30, purchased_at=bought)
    )
    assert "s1" not in month and "s2" in month
    ever = ids(catalog, run(catalog, {"type": "exclude_purchased"}, k=30, purchased_at=bought))
    assert "s1" not in ever and "s2" not in ever
    assert len(ever) == len(IDS) - 2


def test_exclude_unavailable(catalog: ItemCatalog) -> None:
    out = ids(catalog, run(catalog, {"type": "exclude_unavailable"}, k=30))
    assert set(IDS) - set(out) == {"s3", "s5"}


def test_categories_match_whole_levels_of_the_path(catalog: ItemCatalog) -> None:
    shoes = ids(catalog, run(catalog, {"type": "categories", "include": ["Shoes"]}, k=30))
    assert shoes == ["s1", "s2", "s3", "s4", "s5", "s6"]  # not Shoelaces
    running = run(catalog, {"type": "categories", "include": ["shoes>RUNNING"]}, k=30)
    assert ids(catalog, running) == ["s1", "s2", "s5", "s6"]
    no_bags = ids(catalog, run(catalog, {"type": "categories", "exclude": ["Bags"]}, k=30))
    assert not {"b1", "b2", "b3"} & set(no_bags) and "n1" in no_bags
    both = run(
        catalog,
        {"type": "categories", "include": ["Shoes", "Hats"], "exclude": ["Shoes > Running"]},
    )
    assert ids(catalog, both) == ["s3", "s4", "h1", "h2", "h3"]


def test_brands_ignore_case_and_unknown_brands_fail_include(catalog: ItemCatalog) -> None:
    nike = ids(catalog, run(catalog, {"type": "brands", "include": ["NIKE"]}, k=30))
    assert nike == ["s1", "s3", "s5", "s6", "b1", "h1"]
    others = ids(catalog, run(catalog, {"type": "brands", "exclude": ["nike", "Puma"]}, k=30))
    assert not {"s1", "s4", "h2"} & set(others) and "n1" in others


def test_price_range_drops_unknown_prices(catalog: ItemCatalog) -> None:
    out = run(catalog, {"type": "price_range", "min": 20, "max": 60}, k=30)
    prices = catalog.price[out.items]
    assert ((prices >= 20) & (prices <= 60)).all() and "n1" not in ids(catalog, out)
    assert ids(catalog, out) == ["s3", "s4", "b1", "b2", "h1", "h2", "t1", "t2", "t3"]
    open_ended = ids(catalog, run(catalog, {"type": "price_range", "min": 100}, k=30))
    assert open_ended == ["s2", "s5", "g1"]


def test_expression_filter(catalog: ItemCatalog) -> None:
    expr = 'price < 100 and category startswith "Shoes"'
    out = ids(catalog, run(catalog, {"type": "expression", "expression": expr}, k=30))
    assert out == ["s1", "s3", "s4"]  # s6 is spelt "shoes"; x1 is Shoelaces at 3.0
    assert "x1" not in out


# -- boosts ---------------------------------------------------------------------------------
def test_boost_margin_reorders_by_margin_and_leaves_unknown_margins(catalog: ItemCatalog) -> None:
    cands = cands_for(catalog, ["s4", "s1", "h1"])  # scores 100, 99, 98; margins ?, .3, .6
    out = run(catalog, {"type": "boost_margin", "weight": 1.0}, cands=cands)
    assert ids(catalog, out) == ["h1", "s1", "s4"]
    np.testing.assert_allclose(out.scores, [98 * 1.6, 99 * 1.3, 100.0])
    none = run(catalog, {"type": "boost_margin", "weight": 0.0}, cands=cands)
    assert ids(catalog, none) == ["s4", "s1", "h1"]


def test_boosts_move_negative_scores_the_same_way(catalog: ItemCatalog) -> None:
    items = np.array([catalog.index[i] for i in ("s4", "h1")])
    cands = Candidates.from_scores(items, np.array([-1.0, -1.2]))
    out = run(catalog, {"type": "boost_margin", "weight": 1.0}, cands=cands)
    assert ids(catalog, out) == ["h1", "s4"]  # -1.2 + 0.6 × 1.2 > -1.0


def test_boost_new_lifts_recent_items_and_explains(catalog: ItemCatalog) -> None:
    cands = cands_for(catalog, ["s1", "h1", "b2", "s2", "n1"])  # b2 1 day old, s2 3 days
    out = run(catalog, {"type": "boost_new", "days": 14, "factor": 2.0}, cands=cands)
    assert ids(catalog, out) == ["b2", "s2", "s1", "h1", "n1"]
    reasons = dict(zip(ids(catalog, out), out.reasons, strict=True))
    assert reasons["b2"] == reasons["s2"] == "new arrival"
    assert reasons["s1"] is None and reasons["n1"] is None


def test_boost_new_keeps_a_generator_reason(catalog: ItemCatalog) -> None:
    cands = cands_for(catalog, ["s1", "b2"])
    cands.reasons[1] = "because you bought s1"
    out = run(catalog, {"type": "boost_new"}, cands=cands)
    assert ids(catalog, out)[0] == "b2" and out.reasons[0] == "because you bought s1"


# -- promote --------------------------------------------------------------------------------
def test_promote_respects_the_slot_budget(catalog: ItemCatalog) -> None:
    promo = {"type": "promote", "items": ["g1", "g2", "t3"], "slots": 2}
    out = run(catalog, promo)
    assert (out.origin == "promoted").sum() == 2
    assert ids(catalog, out)[:2] == ["t3", "g1"]  # the user's own scores order them
    assert list(out.reasons[:2]) == ["promoted", "promoted"]
    assert len(out) == 10 and len(set(ids(catalog, out))) == 10


def test_promote_at_given_positions_and_injects_unproposed_items(catalog: ItemCatalog) -> None:
    cands = cands_for(catalog, ["s1", "s2", "b1", "b2", "h1", "h2"])
    promo = {"type": "promote", "items": ["g2"], "positions": [3]}
    out = run(catalog, promo, k=5, cands=cands)
    assert ids(catalog, out) == ["s1", "s2", "g2", "b1", "b2"]
    assert out.origin[2] == "promoted"


def test_promoted_items_must_pass_every_filter_wherever_written(catalog: ItemCatalog) -> None:
    promo = {"type": "promote", "items": ["s5", "g1", "g2"], "slots": 1}
    out = run(
        catalog,
        {"type": "exclude_unavailable"},
        promo,
        {"type": "price_range", "max": 100},  # written after promote, still applies
    )
    assert ids(catalog, out)[0] == "g2"  # s5 unavailable, g1 costs 200
    assert "g1" not in ids(catalog, out) and "s5" not in ids(catalog, out)


def test_promote_skips_unavailable_items_even_alone(catalog: ItemCatalog) -> None:
    out = run(catalog, {"type": "promote", "items": ["s3", "unknown-id"], "slots": 1})
    assert "promoted" not in set(out.origin)


def test_promoted_positions_survive_later_boosts_and_diversity(catalog: ItemCatalog) -> None:
    out = run(
        catalog,
        {"type": "promote", "items": ["n1"], "positions": [2]},
        {"type": "boost_margin", "weight": 3},
        {"type": "diversity", "mmr_lambda": 0.3},
    )
    assert ids(catalog, out)[1] == "n1" and out.origin[1] == "promoted"


# -- diversity ------------------------------------------------------------------------------
def test_mmr_with_lambda_one_keeps_score_order(catalog: ItemCatalog) -> None:
    out = run(catalog, {"type": "diversity", "mmr_lambda": 1.0})
    assert ids(catalog, out) == IDS[:10]


def test_mmr_with_small_lambda_spreads_categories(catalog: ItemCatalog) -> None:
    plain = run(catalog, {"type": "diversity", "mmr_lambda": 1.0}, k=6)
    spread = run(catalog, {"type": "diversity", "mmr_lambda": 0.1}, k=6)
    tops = [top_of(catalog, i) for i in ids(catalog, spread)]
    assert len(set(tops)) == 6 > len({top_of(catalog, i) for i in ids(catalog, plain)})
    assert ids(catalog, spread)[0] == "s1"  # the best item still leads


def test_category_cap_is_strict(catalog: ItemCatalog) -> None:
    out = run(catalog, {"type": "diversity", "mmr_lambda": 1.0, "max_per_category": 2}, k=12)
    tops = Counter(top_of(catalog, i) for i in ids(catalog, out))
    assert max(n for top, n in tops.items() if top is not None) == 2
    assert len(out) == 12


def test_caps_bind_promoted_items_too(catalog: ItemCatalog) -> None:
    out = run(
        catalog,
        {"type": "diversity", "max_per_category": 1, "max_per_brand": 1, "by": "category"},
        {"type": "promote", "items": ["s2"], "positions": [1]},
    )
    cats = Counter(catalog.category[out.items])
    brands = Counter(catalog.brand[out.items])
    assert all(n == 1 for c, n in cats.items() if c is not None)
    assert all(n == 1 for b, n in brands.items() if b is not None)
    assert ids(catalog, out)[0] == "s2"  # placed first, so it wins its category and brand


def test_brand_cap(catalog: ItemCatalog) -> None:
    out = run(catalog, {"type": "diversity", "mmr_lambda": 1.0, "max_per_brand": 1}, k=30)
    brands = [b for b in catalog.brand[out.items] if b is not None]
    assert len(brands) == len(set(brands))


# -- discovery ------------------------------------------------------------------------------
def shoe_and_bag_history(catalog: ItemCatalog) -> np.ndarray:
    names = ["s1", "s2", "s4", "s1", "b1", "b2", "s6", "h1"]  # h1: 1 of 8, not usual
    return np.array([catalog.index[i] for i in names])


def test_discovery_picks_outside_categories_by_score(catalog: ItemCatalog) -> None:
    order = ["s1", "s2", "s4", "b1", "b2", "b3", "s6", "x1", "h2", "t2", "t1", "g1"]
    cands = cands_for(catalog, order)
    history = shoe_and_bag_history(catalog)
    out = run(catalog, {"type": "discovery", "share": 0.4}, k=5, cands=cands, history=history)
    got = ids(catalog, out)
    found = [i for i, o in zip(got, out.origin, strict=True) if o == "discovery"]
    # Usual: Shoes, Bags (and shoes). Best outside: Shoelaces x1, then Hats h2 (one each).
    assert found == ["x1", "h2"]
    assert all(r == "something new for you" for r in out.reasons[out.origin == "discovery"])
    assert len(got) == 5 and got[0] == "s1"


def test_discovery_counts_outside_items_already_ranked(catalog: ItemCatalog) -> None:
    cands = cands_for(catalog, ["s1", "t1", "s2", "s4", "h1", "g1"])
    out = run(
        catalog,
        {"type": "discovery", "share": 0.2},
        k=5,
        cands=cands,
        history=shoe_and_bag_history(catalog),
    )
    assert ids(catalog, out) == ["s1", "t1", "s2", "s4", "h1"]
    assert "discovery" not in set(out.origin)


def test_discovery_needs_a_history(catalog: ItemCatalog) -> None:
    out = run(catalog, {"type": "discovery", "share": 0.5}, k=4)
    assert ids(catalog, out) == IDS[:4]


def test_discovery_keeps_naturally_ranked_outside_items(catalog: ItemCatalog) -> None:
    order = ["s1", "s2", "s4", "t1", "s6", "b1", "h2", "g1"]
    cands = cands_for(catalog, order)
    out = run(
        catalog,
        {"type": "discovery", "share": 0.4},
        k=5,
        cands=cands,
        history=shoe_and_bag_history(catalog),
    )
    # t1 stays in the top 5 although h2 is placed before it; Shoes s6 drops out instead.
    assert ids(catalog, out) == ["s1", "s2", "h2", "t1", "s4"]


# -- combinations ---------------------------------------------------------------------------
def test_duplicate_candidates_keep_their_best_place(catalog: ItemCatalog) -> None:
    cands = cands_for(catalog, ["s1", "h1", "s1", "b1", "h1"])
    assert ids(catalog, run(catalog, cands=cands)) == ["s1", "h1", "b1"]


def test_default_placements_run(catalog: ItemCatalog) -> None:
    history = shoe_and_bag_history(catalog)
    bought = {catalog.index["s1"]: NOW - DAY_MS}
    for name, placement in DEFAULT_PLACEMENTS.items():
        out = apply_rules(
            placement.build(),
            ctx(placement.k, history=history, purchased_at=bought),
            cands_for(catalog),
            catalog,
        )
        got = ids(catalog, out)
        assert 0 < len(got) <= placement.k, name
        assert "s1" not in got and "s3" not in got and "s5" not in got, name


FILTER_CONFIGS = st.one_of(
    st.builds(
        lambda d: {"type": "exclude_purchased", "days": d},
        st.one_of(st.none(), st.floats(1, 100)),
    ),
    st.just({"type": "exclude_unavailable"}),
    st.builds(
        lambda inc, exc: {"type": "categories", "include": inc, "exclude": exc},
        st.lists(st.sampled_from(["Shoes", "Bags", "Hats > Caps", "Toys", "Garden"]), max_size=3),
        st.lists(st.sampled_from(["Shoes > Running", "Bags", "Toys"]), max_size=2),
    ),
    st.builds(
        lambda inc, exc: {"type": "brands", "include": inc, "exclude": exc},
        st.lists(st.sampled_from(["Nike", "Puma", "Lego", "Bosch"]), max_size=3),
        st.lists(st.sampled_from(["Nike", "Eastpak"]), max_size=1),
    ),
    st.builds(
        lambda lo, hi: {"type": "price_range", "min": lo, "max": lo + hi},
        st.floats(0, 100),
        st.floats(0, 150),
    ),
    st.sampled_from(
        [
            {"type": "expression", "expression": e}
            for e in (
                "price < 60",
                'not brand == "Nike" or age_days < 30',
                'category startswith "Shoes" and not tags contains "sale"',
                'margin >= 0.2 or top_category in ["Hats", "Toys"]',
            )
        ]
    ),
)
OTHER_CONFIGS = st.one_of(
    st.builds(lambda w: {"type": "boost_margin", "weight": w}, st.floats(-2, 5)),
    st.builds(
        lambda d, f: {"type": "boost_new", "days": d, "factor": f},
        st.floats(1, 60),
        st.floats(0.1, 4),
    ),
    st.builds(
        lambda items, slots: {"type": "promote", "items": items, "slots": slots},
        st.lists(st.sampled_from(IDS), min_size=1, max_size=5),
        st.integers(1, 4),
    ),
    st.builds(
        lambda items, pos: {"type": "promote", "items": items, "positions": pos, "slots": 1},
        st.lists(st.sampled_from(IDS), min_size=1, max_size=3),
        st.lists(st.integers(1, 12), min_size=1, max_size=3),
    ),
    st.builds(
        lambda lam, cat, brand, by: {
            "type": "diversity",
            "mmr_lambda": lam,
            "max_per_category": cat,
            "max_per_brand": brand,
            "by": by,
        },
        st.floats(0, 1),
        st.one_of(st.none(), st.integers(1, 3)),
        st.one_of(st.none(), st.integers(1, 3)),
        st.sampled_from(["category", "top_category"]),
    ),
    st.builds(lambda s: {"type": "discovery", "share": s}, st.floats(0, 1)),
)


def _valid_chain(chain: list[dict[str, Any]]) -> bool:
    try:
        PlacementConfig(k=1, rules=chain)
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    chain=st.lists(st.one_of(FILTER_CONFIGS, OTHER_CONFIGS), max_size=7).filter(_valid_chain),
    picks=st.lists(st.integers(0, len(IDS) - 1), max_size=40),
    k=st.integers(1, 12),
    bought=st.dictionaries(st.integers(0, len(IDS) - 1), st.floats(0, 200), max_size=6),
    history=st.lists(st.integers(0, len(IDS) - 1), max_size=10),
    seed=st.integers(0, 2**16),
)
def test_random_rule_chains_never_show_a_filtered_item(
    catalog: ItemCatalog,
    chain: list[dict[str, Any]],
    picks: list[int],
    k: int,
    bought: dict[int, float],
    history: list[int],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=len(picks))
    cands = Candidates.from_scores(np.array(picks, np.int64), scores)
    request = ctx(
        k,
        purchased_at={i: NOW - days * DAY_MS for i, days in bought.items()},
        history=np.array(history, np.int64),
    )
    built = rules(*chain)
    out = apply_rules(built, request, cands, catalog)
    assert len(out) <= k
    assert len(set(out.items.tolist())) == len(out)
    for rule in built:
        if isinstance(rule, Filter):
            assert rule.keep(request, out.items, catalog).all(), rule
        if isinstance(rule, Diversity):
            for column, limit in rule.caps():
                codes = getattr(catalog, column)[out.items]
                assert max(Counter(codes[codes >= 0].tolist()).values(), default=0) <= limit
    for column in ("scores", "reasons", "origin"):
        assert len(getattr(out, column)) == len(out)
    assert catalog.available[out.items[out.origin == "promoted"]].all()
    no_caps = not any(isinstance(r, Diversity) and r.caps() for r in built)
    if no_caps:  # no slot is wasted: every admissible candidate could have filled it
        filters = [r for r in built if isinstance(r, Filter)]
        unique = np.unique(np.array(picks, np.int64))
        admissible = unique
        for rule in filters:
            admissible = admissible[rule.keep(request, admissible, catalog)]
        assert len(out) >= min(k, len(admissible))


# -- configuration --------------------------------------------------------------------------
def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nextbuy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_placements_load_from_toml_and_keep_other_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
[placements.home]
k = 8
rules = [
  { type = "exclude_purchased", days = 30 },
  { type = "exclude_unavailable" },
  { type = "expression", expression = 'price < 100 and category startswith "Shoes"' },
  { type = "diversity", mmr_lambda = 0.7, max_per_category = 3 },
]

[placements.sale]
rules = [{ type = "promote", items = ["b1", "b2"], slots = 2, positions = [1, 4] }]
""",
    )
    settings_ = load_settings(path)
    home = settings_.placements["home"]
    assert home.k == 8 and [r.type for r in home.rules][2] == "expression"
    assert set(settings_.placements) >= {"home", "sale", "product_page", "cart", "email"}
    built = settings_.placements["home"].build()
    assert [r.name for r in built] == [
        "exclude_purchased",
        "exclude_unavailable",
        "expression",
        "diversity",
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{ type = \"expression\", expression = 'price < ' }", "at column 9"),
        ('{ type = "expression", expression = "__import__(\'os\')" }', "unknown field"),
        ('{ type = "teleport" }', "placements.home.rules.0"),
        ('{ type = "exclude_purchased", weeks = 3 }', "weeks"),
        ('{ type = "price_range", min = 50, max = 10 }', "above max"),
        ('{ type = "promote", items = ["a"], slots = 3, positions = [1] }', "positions"),
        ('{ type = "diversity", mmr_lambda = 1.5 }', "mmr_lambda"),
    ],
)
def test_bad_rules_fail_with_a_one_line_message(tmp_path: Path, rule: str, message: str) -> None:
    path = write_config(tmp_path, f"[placements.home]\nrules = [{rule}]\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_boost_after_diversity_is_refused() -> None:
    with pytest.raises(ValidationError, match="after diversity"):
        PlacementConfig(rules=[{"type": "diversity"}, {"type": "boost_new"}])


def test_rebuilding_rules_applies_a_new_config_at_once(catalog: ItemCatalog) -> None:
    before = PlacementConfig(k=3, rules=[])
    after = PlacementConfig(k=3, rules=[{"type": "categories", "include": ["Hats"]}])
    cands = cands_for(catalog)
    assert ids(catalog, apply_rules(before.build(), ctx(3), cands, catalog)) == IDS[:3]
    assert ids(catalog, apply_rules(after.build(), ctx(3), cands, catalog)) == ["h1", "h2", "h3"]


def test_exclude_purchased_for_discovery_stands_aside_when_lists_repeat_purchases() -> None:
    items = np.arange(5, dtype=np.int64)
    bought = {2: 1_000.0}
    discovery = RequestContext(None, 2_000.0, 5, purchased_at=bought)
    repeats = RequestContext(None, 2_000.0, 5, purchased_at=bought, repeats=True)
    for rule in (ExcludePurchased(when="discovery"), ExcludePurchased()):
        assert not rule.keep(discovery, items, None)[2]  # type: ignore[arg-type]
    assert ExcludePurchased(when="discovery").keep(repeats, items, None).all()  # type: ignore[arg-type]
    assert not ExcludePurchased().keep(repeats, items, None)[2]  # type: ignore[arg-type]
