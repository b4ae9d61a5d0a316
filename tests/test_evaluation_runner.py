"""The evaluation runner, report and Blend on a synthetic shop with a planted truth.

Users belong to one of four clusters and buy mostly the items of their cluster, the popular
ones more often: a personal model must beat popularity, which must beat random. A dozen users
shop only in the last days, so a temporal split has users new in the test period.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from threadpoolctl import threadpool_limits

from nextbuy.evaluation import evaluate
from nextbuy.evaluation.report import print_table, write_report
from nextbuy.evaluation.runner import EvaluationResult, evaluate_models, prepare, recommend_lists
from nextbuy.evaluation.splits import Split, temporal_split
from nextbuy.models import EASE, ItemKNN, PopularityModel, Recommender, create_model
from nextbuy.models.blend import Blend, OwnHistory, normalise_rows

CLUSTERS, USERS_PER, ITEMS_PER, PER_USER, NEW_USERS = 4, 40, 25, 14, 12


def planted_shop(seed: int = 0, repeat_share: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Interactions and items of the clustered shop; `repeat_share` of purchases are rebought."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    n_items = CLUSTERS * ITEMS_PER
    pop = 1.0 / np.arange(1, ITEMS_PER + 1) ** 0.7
    rows = []
    for u in range(CLUSTERS * USERS_PER + NEW_USERS):
        late = u >= CLUSTERS * USERS_PER
        own = rng.choice(ITEMS_PER, size=PER_USER, replace=False, p=pop / pop.sum())
        chosen = np.concatenate([own + (u % CLUSTERS) * ITEMS_PER, rng.integers(0, n_items, 2)])
        days = rng.uniform(90, 100, len(chosen)) if late else rng.uniform(0, 100, len(chosen))
        for item, day in zip(chosen, days, strict=True):
            rows.append((f"u{u}", f"i{item}", "purchase", start + pd.Timedelta(days=float(day))))
            if rng.random() < repeat_share:
                again = min(float(day) + rng.uniform(1, 40), 100.0)
                rows.append((f"u{u}", f"i{item}", "purchase", start + pd.Timedelta(days=again)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "category": [f"cluster {i // ITEMS_PER}" for i in range(n_items)],
        }
    )
    return df, items


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def shop() -> tuple[pd.DataFrame, pd.DataFrame]:
    return planted_shop()


@pytest.fixture(scope="module")
def split(shop: tuple[pd.DataFrame, pd.DataFrame]) -> Split:
    return temporal_split(shop[0], test_fraction=0.2)


@pytest.fixture(scope="module")
def result(split: Split, shop: tuple[pd.DataFrame, pd.DataFrame]) -> EvaluationResult:
    models = {"ease": EASE(reg=100.0), "itemknn": ItemKNN(neighbours=30)}
    return evaluate_models(split, models, protocol="discovery", items=shop[1])


def _row(result: EvaluationResult, model: str) -> pd.Series:
    return result.table.set_index("model").loc[model]


# --------------------------------------------------------------------------- runner


def test_models_beat_popularity_which_beats_random(result: EvaluationResult) -> None:
    ndcg = result.table.set_index("model")["ndcg@10"]
    assert ndcg["popularity"] > ndcg["random"]
    assert ndcg["ease"] > ndcg["popularity"] + 0.1
    assert ndcg["itemknn"] > ndcg["popularity"] + 0.1
    assert set(result.baselines) == {"random", "popularity"}


def test_table_has_every_metric_at_every_k(result: EvaluationResult) -> None:
    for metric in ("ndcg", "recall", "precision", "map", "mrr", "hit_rate"):
        for k in (1, 5, 10, 20):
            assert result.table[f"{metric}@{k}"].between(0, 1).all()
    for column in ("coverage", "diversity", "novelty", "popularity_bias", "personalisation"):
        assert result.table[column].notna().all()
    assert (result.table["fit_seconds"] >= 0).all()
    assert (result.table["n_users_evaluated"] == result.split_summary["users_evaluated"]).all()
    # popularity shows everyone the same list: least personal, narrowest, most popular
    pop, ease = _row(result, "popularity"), _row(result, "ease")
    assert pop["personalisation"] < ease["personalisation"]
    assert pop["coverage"] < ease["coverage"]
    assert pop["popularity_bias"] > ease["popularity_bias"]
    long = result.by_k.query("model == 'ease' and metric == 'ndcg'").set_index("k")["value"]
    assert long[10] == pytest.approx(ease["ndcg@10"])


def test_discovery_never_recommends_nor_counts_training_items() -> None:
    df, _ = planted_shop(repeat_share=0.4)
    repeat_split = temporal_split(df, test_fraction=0.2)
    setup = prepare(repeat_split.train, repeat_split.test, "discovery")
    n_items = setup.data.n_items
    owned = setup.histories > 0
    assert setup.truth[:, :n_items].multiply(owned).nnz == 0
    top, _ = recommend_lists(OwnHistory().fit(setup.data), setup, 10)
    listed = np.zeros(owned.shape, bool)
    rows = np.repeat(np.arange(top.shape[0]), top.shape[1])
    valid = top.ravel() >= 0
    listed[rows[valid], top.ravel()[valid]] = True
    assert not (listed & owned.toarray()).any()


def test_repeat_protocol_counts_repurchases_and_adds_own_history() -> None:
    df, _ = planted_shop(repeat_share=0.4)
    repeat_split = temporal_split(df, test_fraction=0.2)
    setup = prepare(repeat_split.train, repeat_split.test, "repeat")
    assert setup.exclude is None
    assert setup.truth[:, : setup.data.n_items].multiply(setup.histories > 0).nnz > 0
    repeat = evaluate_models(repeat_split, {"ease": EASE(reg=100.0)}, protocol="repeat")
    discovery = evaluate_models(repeat_split, {"ease": EASE(reg=100.0)}, protocol="discovery")
    assert "own_history" in repeat.baselines
    assert "own_history" not in set(discovery.table["model"])
    # buying again is what own_history predicts: it only scores under the repeat protocol
    own = _row(repeat, "own_history")
    assert own["ndcg@10"] > _row(repeat, "random")["ndcg@10"]
    assert own["recall@10"] > 0.1


def test_standard_protocol_keeps_repurchases_in_the_truth() -> None:
    df, _ = planted_shop(repeat_share=0.4)
    repeat_split = temporal_split(df, test_fraction=0.2)
    standard = prepare(repeat_split.train, repeat_split.test, "standard")
    discovery = prepare(repeat_split.train, repeat_split.test, "discovery")
    assert standard.exclude is not None
    assert standard.truth.nnz > discovery.truth.nnz
    assert standard.truth[:, : standard.data.n_items].multiply(standard.histories > 0).nnz > 0


def test_new_users_are_a_segment_served_by_popularity(
    result: EvaluationResult, split: Split
) -> None:
    summary = result.split_summary
    assert summary["new_users"] == NEW_USERS
    assert summary["new_users_evaluated"] == NEW_USERS
    seg = result.by_segment
    new = seg[(seg["dimension"] == "user_activity") & (seg["segment"] == "new")]
    assert set(new["model"]) == set(result.table["model"])
    assert (new["users"] == NEW_USERS).all()
    # a personal model has nothing to go on for a new user: it falls back to best sellers
    by_model = new.set_index("model")["ndcg@10"]
    assert by_model["ease"] == pytest.approx(by_model["popularity"])
    assert by_model["popularity"] > 0
    setup = prepare(split.train, split.test, "discovery")
    is_new = ~pd.Index(setup.user_ids).isin(pd.Index(setup.data.user_ids))
    ease_top, _ = recommend_lists(EASE(reg=100.0).fit(setup.data), setup, 10)
    pop_top, _ = recommend_lists(PopularityModel().fit(setup.data), setup, 10)
    assert (ease_top[is_new] >= 0).all()
    np.testing.assert_array_equal(ease_top[is_new], pop_top[is_new])


def test_category_segments_cover_the_clusters(result: EvaluationResult) -> None:
    seg = result.by_segment
    cats = seg[(seg["dimension"] == "category") & (seg["model"] == "ease")]
    assert {f"cluster {c}" for c in range(CLUSTERS)} <= set(cats["segment"])
    assert (cats["users"] > 0).all()


def test_new_items_stay_in_the_truth_unreachable(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, _ = shop
    late = df["timestamp"] >= df["timestamp"].quantile(0.9)
    df = pd.concat([df, df[late].assign(item_id="brand-new")], ignore_index=True)
    fresh = temporal_split(df, test_fraction=0.2)
    res = evaluate_models(fresh, {"ease": EASE(reg=100.0)}, segment_by_category=False)
    assert res.split_summary["new_items"] == 1
    assert res.split_summary["truth_pairs_on_new_items"] > 0


def test_a_model_that_cannot_fit_gets_an_error_row(split: Split) -> None:
    res = evaluate_models(split, {"tiny": EASE(max_items=5), "ease": EASE(reg=100.0)})
    tiny = _row(res, "tiny")
    assert "max_items" in tiny["error"]
    assert np.isnan(tiny["ndcg@10"])
    assert _row(res, "ease")["ndcg@10"] > 0


def test_evaluate_convenience_returns_the_table(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    df, items = shop
    table = evaluate(df, ["ease", "itemknn"], items=items, ks=(5, 10))
    assert list(table["model"]) == ["ease", "itemknn", "random", "popularity"]
    assert "ndcg@10" in table.columns and "ndcg@20" not in table.columns
    ndcg = table.set_index("model")["ndcg@10"]
    assert ndcg["ease"] > ndcg["popularity"] > ndcg["random"]


def test_json_holds_every_number(result: EvaluationResult) -> None:
    payload = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert {r["model"] for r in payload["table"]} == set(result.table["model"])
    assert len(payload["by_k"]) == len(result.by_k)
    assert len(payload["by_segment"]) == len(result.by_segment)
    assert payload["split_summary"]["test_cut"] == result.split_summary["test_cut"]


# --------------------------------------------------------------------------- report


def test_report_is_self_contained_html_with_plots_and_json(
    result: EvaluationResult, tmp_path: Path
) -> None:
    html_path, json_path = write_report(result, tmp_path / "report.html", title="planted shop")
    html = html_path.read_text(encoding="utf-8")
    assert json_path == tmp_path / "report.json"
    assert html.count("<svg") >= 4  # metric@k, coverage scatter, user and category segments
    assert "<?xml" not in html
    # nothing fetched: no external source, stylesheet, import or script
    for fetch in ('src="http', "src='http", 'href="http', "url(http", "@import", "<script"):
        assert fetch not in html
    for model in result.table["model"]:
        assert f">{model}<" in html
    assert html.count('class="baseline"') == 2
    assert "new users" in html  # the split summary
    payload = json.loads(json_path.read_text(encoding="utf-8"))
    assert {r["model"] for r in payload["table"]} == {"ease", "itemknn", "random", "popularity"}


def test_print_table_names_every_model(result: EvaluationResult) -> None:
    console = Console(record=True, width=140)
    print_table(result, console)
    text = console.export_text()
    for model in result.table["model"]:
        assert model in text
    assert "NDCG" in text


# --------------------------------------------------------------------------- blend


def test_blend_round_trips_through_save_and_load(split: Split, tmp_path: Path) -> None:
    setup = prepare(split.train, split.test, "discovery")
    blend = Blend(
        [EASE(reg=100.0), {"model": "itemknn", "params": {"neighbours": 30}}, PopularityModel()],
        weights=[1.0, 0.5, 0.2],
        normalise="minmax",
    ).fit(setup.data)
    blend.save(tmp_path / "blend")
    loaded = Recommender.load(tmp_path / "blend")
    assert isinstance(loaded, Blend)
    assert loaded.weights == [1.0, 0.5, 0.2] and loaded.normalise == "minmax"
    before = blend.recommend(setup.histories, 10, setup.exclude)
    after = loaded.recommend(setup.histories, 10, setup.exclude)
    np.testing.assert_array_equal(before.items, after.items)
    np.testing.assert_allclose(before.scores, after.scores, rtol=1e-6)
    again = create_model("blend", **loaded.params()).fit(setup.data)
    np.testing.assert_array_equal(
        again.recommend(setup.histories, 10, setup.exclude).items, before.items
    )


def test_blend_of_one_model_ranks_like_it(split: Split) -> None:
    setup = prepare(split.train, split.test, "discovery")
    ease = EASE(reg=100.0).fit(setup.data)
    for how in ("zscore", "minmax", "rank"):
        blend = Blend([ease], normalise=how, refit=False).fit(setup.data)
        np.testing.assert_array_equal(
            blend.recommend(setup.histories, 10, setup.exclude).items,
            ease.recommend(setup.histories, 10, setup.exclude).items,
        )


def test_blend_falls_back_to_its_non_personal_members_for_new_users(split: Split) -> None:
    setup = prepare(split.train, split.test, "discovery")
    blend = Blend([EASE(reg=100.0), PopularityModel()], weights=[1.0, 0.1]).fit(setup.data)
    empty = setup.histories[:0].copy()
    empty.resize((1, setup.data.n_items))
    top = blend.recommend(empty, 5).items[0]
    assert (top >= 0).all()
    np.testing.assert_array_equal(
        top, PopularityModel().fit(setup.data).recommend(empty, 5).items[0]
    )


def test_blend_rejects_bad_parameters() -> None:
    from nextbuy.errors import ConfigError

    with pytest.raises(ConfigError):
        Blend([])
    with pytest.raises(ConfigError):
        Blend([EASE()], weights=[1.0, 2.0])
    with pytest.raises(ConfigError):
        Blend([EASE()], normalise="softmax")  # type: ignore[arg-type]


def test_normalise_rows_puts_unreachable_items_below_every_reachable_one() -> None:
    scores = np.array(
        [[3.0, -np.inf, 1.0, 2.0], [-np.inf] * 4, [-np.inf, 5.0, -np.inf, -np.inf]], np.float32
    )
    for how in ("zscore", "minmax", "max", "rank"):
        out = normalise_rows(scores, how)
        assert np.isfinite(out).all()
        assert out[0, 0] > out[0, 3] > out[0, 2] > out[0, 1]
        assert (out[1] == 0).all()  # nothing to say: no opinion
        # a single recommendable item (one bought product) still stands above the rest
        assert out[2, 1] > out[2, 0] == out[2, 2] == out[2, 3]
    z = normalise_rows(scores[:1], "zscore")[0, [0, 2, 3]]
    assert z.mean() == pytest.approx(0.0, abs=1e-6) and z.std() == pytest.approx(1.0)


def test_own_history_round_trips(split: Split, tmp_path: Path) -> None:
    setup = prepare(split.train, split.test, "repeat")
    model = OwnHistory().fit(setup.data)
    model.save(tmp_path / "own")
    loaded = Recommender.load(tmp_path / "own")
    np.testing.assert_array_equal(
        model.recommend(setup.histories, 5).items, loaded.recommend(setup.histories, 5).items
    )


def test_both_protocols_from_one_fit_and_own_history_only_where_repeats_count() -> None:
    from nextbuy.evaluation.runner import evaluate_protocols

    events, _ = planted_shop(seed=4, repeat_share=0.4)
    split = temporal_split(events, 0.2)
    ease = EASE(reg=100.0)
    results = evaluate_protocols(split, {"ease": ease}, protocols=("repeat", "discovery"))
    repeat, discovery = results
    assert (repeat.protocol, discovery.protocol) == ("repeat", "discovery")
    assert "own_history" in set(repeat.table["model"])
    assert "own_history" not in set(discovery.table["model"])
    fits = [_row(r, "ease")["fit_seconds"] for r in results]
    assert fits[0] == fits[1]  # fitted once
    assert _row(discovery, "ease")["ndcg@10"] != _row(repeat, "ease")["ndcg@10"]


def test_report_shows_the_other_protocol_and_the_leaderboard_of_the_choice(
    tmp_path: Path,
) -> None:
    from markupsafe import escape

    from nextbuy.choice import choose
    from nextbuy.config import Settings
    from nextbuy.evaluation.runner import evaluate_protocols

    events, items = planted_shop(seed=5, repeat_share=0.4)
    choice = choose(events, items, Settings(), budget="10s").to_json()
    split = temporal_split(events, 0.2)
    first, other = evaluate_protocols(split, {"ease": EASE(reg=100.0)})
    html, data = write_report(first, tmp_path / "r.html", others=[other], choice=choice)
    page = html.read_text()
    assert "How the served model was chosen" in page
    assert "The same models, repeat protocol" in page
    assert str(escape(choice["verdict"])) in page
    saved = json.loads(data.read_text())
    assert saved["choice"]["winner"]["label"] == choice["winner"]["label"]
    assert "repeat" in saved["other_protocols"]
