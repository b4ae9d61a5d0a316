"""Tuning on a validation split of a synthetic shop with a planted truth; the test part is bait."""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from nextbuy.errors import ConfigError
from nextbuy.evaluation.runner import evaluate_models
from nextbuy.evaluation.splits import Split, temporal_split
from nextbuy.evaluation.tuning import TuningResult, tune
from nextbuy.models import ALSModel, Blend


def planted_shop(seed: int = 0) -> pd.DataFrame:
    """Four clusters of 40 users, each buying 14 of its cluster's 25 items and 2 at random."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    pop = 1.0 / np.arange(1, 26) ** 0.7
    rows = []
    for u in range(160):
        own = rng.choice(25, size=14, replace=False, p=pop / pop.sum()) + (u % 4) * 25
        for item in np.concatenate([own, rng.integers(0, 100, 2)]):
            day = pd.Timedelta(days=float(rng.uniform(0, 100)))
            rows.append((f"u{u}", f"i{item}", "purchase", start + day))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])


class Untouchable:
    """Stands in for the test part: any use of it fails the test."""

    def _fail(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("tuning read the test part of the split")

    __getattr__ = _fail
    __getitem__ = _fail
    __len__ = _fail
    __iter__ = _fail
    __bool__ = _fail


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def split() -> Split:
    return temporal_split(planted_shop(), test_fraction=0.2, validation_fraction=0.2)


@pytest.fixture(scope="module")
def baited(split: Split) -> Split:
    return Split(
        train=split.train,
        validation=split.validation,
        test=Untouchable(),  # type: ignore[arg-type]
        protocol=split.protocol,
    )


def test_tuning_never_reads_the_test_part(baited: Split) -> None:
    result = tune("ease", baited, n_trials=4, seed=1)
    assert isinstance(result, TuningResult)
    assert len(result.trials) == 4


def test_tuning_beats_a_bad_default_on_validation_and_on_test(split: Split, baited: Split) -> None:
    # 64 factors for 160 users overfit: the default ALS is far from what these data allow
    result = tune("als", baited, n_trials=12, seed=0, metric="ndcg@10")
    assert result.best_value > result.default_value + 0.05
    assert set(result.best_params) >= {"factors", "regularization", "alpha", "iterations"}
    assert (result.trials["state"] == "COMPLETE").all()
    assert result.trials["value"].max() == pytest.approx(result.best_value)
    # the parameters chosen on validation carry over to the untouched test period
    models = {"default": ALSModel(), "tuned": result.model()}
    table = evaluate_models(split, models, baselines=False).table.set_index("model")
    assert table.loc["tuned", "ndcg@10"] > table.loc["default", "ndcg@10"]


def test_tuning_keeps_the_default_when_no_trial_beats_it(baited: Split) -> None:
    # a space of only far too little regularisation (EASE then overfits): the default must win
    space = {"reg": ("float", 1e-3, 1e-2, "log")}
    result = tune("ease", baited, n_trials=3, search_space=space)
    assert result.best_params == {}
    assert result.best_value == result.default_value


def test_itemknn_space_only_sets_bm25_parameters_with_bm25(baited: Split) -> None:
    result = tune("itemknn", baited, n_trials=10, seed=3)
    params = result.trials.filter(like="params_")
    bm25 = result.trials["params_weighting"] == "bm25"
    assert params.loc[bm25, "params_shrink"].isna().all()
    assert params.loc[~bm25, "params_k1"].isna().all()


def test_blend_weights_are_tuned_over_members_fitted_once(baited: Split) -> None:
    members = [{"model": "ease", "params": {"reg": 10.0}}, {"model": "popularity"}]
    result = tune("blend", baited, n_trials=10, seed=0, fixed_params={"members": members})
    weights = result.best_params["weights"]
    assert len(weights) == 2 and weights[0] == 1.0
    assert result.best_value >= result.default_value
    model = result.model()
    assert isinstance(model, Blend) and model.members[0]["params"]["reg"] == 10.0


def test_tuning_refuses_what_it_cannot_do(split: Split) -> None:
    no_validation = Split(split.train, split.train.iloc[:0], split.test, split.protocol)
    with pytest.raises(ConfigError, match="validation"):
        tune("ease", no_validation, n_trials=1)
    with pytest.raises(ConfigError, match="unknown model"):
        tune("nope", split, n_trials=1)
    with pytest.raises(ConfigError, match="metric"):
        tune("ease", split, n_trials=1, metric="auc")
    with pytest.raises(ConfigError, match="members"):
        tune("blend", split, n_trials=1)
