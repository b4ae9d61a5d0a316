"""Hyper-parameter search with Optuna: fit on a split's train part, score on its validation part.

The test part of the split is never read, so a tuned model's test numbers stay honest. Carve
the validation part from the training data (`temporal_split(df, 0.2, validation_fraction=0.1)`
or a second split of `split.train`). The model's defaults are scored first: the result is
never worse on validation than not tuning at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from nextbuy.errors import ConfigError, NextbuyError
from nextbuy.evaluation import metrics
from nextbuy.evaluation.runner import RANKING_METRICS
from nextbuy.evaluation.setup import (
    EvaluationSetup,
    Protocol,
    fill_with_popular,
    prepare,
    recommend_lists,
)
from nextbuy.evaluation.splits import Split
from nextbuy.models import create_model, known_model
from nextbuy.models.base import Recommender, top_k
from nextbuy.models.blend import Blend

# ("float", low, high[, "log"]) | ("int", low, high[, "log"]) | ("categorical", [choices])
ParamSpec = tuple[Any, ...]
SpaceFunction = Callable[[optuna.Trial, Mapping[str, Any]], dict[str, Any]]
SearchSpace = Mapping[str, ParamSpec] | SpaceFunction

FACTOR_CHOICES: tuple[int, ...] = (16, 32, 64, 128)
# a negative weight on a best-seller list pushes a blend away from the obvious (popularity debias)
NON_PERSONAL: frozenset[str] = frozenset({"popularity", "trending"})

__all__ = ["DEFAULT_SPACES", "TuningResult", "suggest", "tune"]


def _itemknn_space(trial: optuna.Trial, fixed: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "neighbours": trial.suggest_int("neighbours", 10, 500, log=True),
        "weighting": trial.suggest_categorical("weighting", ["bm25", "tfidf", "none"]),
    }
    # k1 and b shape BM25 only; shrink is refused with BM25
    if params["weighting"] == "bm25":
        params["k1"] = trial.suggest_float("k1", 0.2, 3.0)
        params["b"] = trial.suggest_float("b", 0.0, 1.0)
    else:
        params["shrink"] = trial.suggest_float("shrink", 0.0, 200.0)
    return params


def _blend_space(trial: optuna.Trial, fixed: Mapping[str, Any]) -> dict[str, Any]:
    members = list(fixed.get("members") or ())
    # the first weight stays 1: scaling every weight alike changes no list
    weights = [1.0]
    for i, member in enumerate(members[1:], start=1):
        low = -1.0 if _member_name(member) in NON_PERSONAL else 0.0
        weights.append(trial.suggest_float(f"weight_{i}", low, 1.5))
    params: dict[str, Any] = {"weights": weights}
    if "normalise" not in fixed:
        params["normalise"] = trial.suggest_categorical("normalise", ["zscore", "minmax", "rank"])
    return params


def _member_name(member: Any) -> str:
    return member.name if isinstance(member, Recommender) else str(member.get("model", ""))


DEFAULT_SPACES: dict[str, SearchSpace] = {
    "ease": {"reg": ("float", 10.0, 10_000.0, "log")},
    "als": {
        "factors": ("categorical", list(FACTOR_CHOICES)),
        "regularization": ("float", 1e-3, 10.0, "log"),
        "alpha": ("float", 0.1, 50.0, "log"),
        "iterations": ("int", 5, 30),
    },
    "bpr": {
        "factors": ("categorical", list(FACTOR_CHOICES)),
        "learning_rate": ("float", 1e-3, 0.2, "log"),
        "regularization": ("float", 1e-4, 0.1, "log"),
        "iterations": ("int", 20, 300, "log"),
    },
    "itemknn": _itemknn_space,
    "trending": {"half_life_days": ("float", 0.5, 120.0, "log")},
    "popularity": {"by": ("categorical", ["users", "events", "weight"])},
    "category_bestsellers": {"by": ("categorical", ["users", "events", "weight"])},
    "fbt": {
        "min_support": ("int", 1, 10),
        "metric": ("categorical", ["lift", "confidence"]),
        "neighbours": ("int", 10, 300, "log"),
    },
    "blend": _blend_space,
}


@dataclass
class TuningResult:
    """The best parameters found, their validation score and every trial."""

    model_name: str
    metric: str
    best_params: dict[str, Any]  # complete: the fixed parameters and the tuned ones
    best_value: float
    default_value: float  # the model with only the fixed parameters (its defaults)
    trials: pd.DataFrame  # number, value, state, seconds, params_*

    def model(self) -> Recommender:
        """A new, unfitted model with the best parameters."""
        return create_model(self.model_name, **self.best_params)


def suggest(trial: optuna.Trial, space: SearchSpace, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for one trial from a search space (a mapping of specs or a function)."""
    if callable(space):
        return space(trial, fixed)
    return {name: _suggest_one(trial, name, spec) for name, spec in space.items()}


def _suggest_one(trial: optuna.Trial, name: str, spec: ParamSpec) -> Any:
    kind, *args = spec
    if kind == "categorical":
        return trial.suggest_categorical(name, list(args[0]))
    if kind in ("float", "int") and len(args) in (2, 3):
        log = len(args) == 3 and args[2] == "log"
        if kind == "float":
            return trial.suggest_float(name, float(args[0]), float(args[1]), log=log)
        return trial.suggest_int(name, int(args[0]), int(args[1]), log=log)
    raise ConfigError(f"search space entry {name!r}: cannot read {spec!r}")


def tune(
    model_name: str,
    split: Split,
    *,
    n_trials: int = 30,
    timeout: float | None = None,
    metric: str = "ndcg@10",
    protocol: Protocol = "discovery",
    seed: int = 0,
    search_space: SearchSpace | None = None,
    fixed_params: Mapping[str, Any] | None = None,
    weights: Mapping[str, float] | None = None,
    half_life_days: float | None = None,
    relevant_events: Sequence[str] | None = None,
    items: pd.DataFrame | None = None,
) -> TuningResult:
    """Search `model_name`'s hyper-parameters with TPE, fitting on train, scoring on validation.

    `fixed_params` are passed to every trial (for "blend": its `members`, as specs). Trials
    whose parameters fail to fit are recorded as failed and skipped.
    """
    known_model(model_name)
    space = search_space if search_space is not None else DEFAULT_SPACES.get(model_name)
    if space is None:
        raise ConfigError(f"no default search space for {model_name!r}; pass search_space")
    base, k = _parse_metric(metric)
    train, validation = _tuning_parts(split)
    setup = prepare(
        train,
        validation,
        protocol,
        weights=weights,
        half_life_days=half_life_days,
        relevant_events=relevant_events,
    )
    if setup.n_users == 0:
        raise ConfigError("no validation user has a relevant interaction to tune on")
    fixed = dict(fixed_params or {})
    score = _scorer(model_name, fixed, setup, items, base, k)
    default_value = score(fixed)
    study = _optimise(score, space, fixed, n_trials, timeout, seed)
    return _result(model_name, metric, fixed, default_value, study)


def _parse_metric(metric: str) -> tuple[str, int]:
    base, _, k = metric.partition("@")
    if base not in RANKING_METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"metric must look like ndcg@10 ({', '.join(RANKING_METRICS)})")
    return base, int(k)


def _tuning_parts(split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation; the split's test part is deliberately never looked at."""
    validation = split.validation
    if validation is None or len(validation) == 0:
        raise ConfigError(
            "tuning needs a validation part carved from the training data, e.g. "
            "temporal_split(df, 0.2, validation_fraction=0.1); the test part is never used"
        )
    return split.train, validation


def _scorer(
    model_name: str,
    fixed: Mapping[str, Any],
    setup: EvaluationSetup,
    items: pd.DataFrame | None,
    base: str,
    k: int,
) -> Callable[[Mapping[str, Any]], float]:
    """A function from parameters to the validation metric."""
    if model_name == "blend":
        return _blend_scorer(fixed, setup, items, base, k)

    def score(params: Mapping[str, Any]) -> float:
        model = create_model(model_name, **params).fit(setup.data, items)
        top, _ = recommend_lists(model, setup, k)
        return _metric(top, setup, base, k)

    return score


def _blend_scorer(
    fixed: Mapping[str, Any],
    setup: EvaluationSetup,
    items: pd.DataFrame | None,
    base: str,
    k: int,
) -> Callable[[Mapping[str, Any]], float]:
    """Members are fitted and scored once; each trial only reweighs their scores."""
    members = fixed.get("members")
    if not members:
        raise ConfigError("tuning a blend needs fixed_params={'members': [...]}")
    fitted = [m.fit(setup.data, items) for m in Blend(members).models]
    parts = [m.score(setup.histories) for m in fitted]

    def score(params: Mapping[str, Any]) -> float:
        blend = Blend(**{**params, "members": fitted, "refit": False})
        scores = blend.combine(list(parts))
        if setup.exclude is not None:
            rows, cols = setup.exclude.nonzero()
            scores[rows, cols] = -np.inf
        top = fill_with_popular(top_k(scores, k).items, setup)
        return _metric(top, setup, base, k)

    return score


def _metric(top: np.ndarray, setup: EvaluationSetup, base: str, k: int) -> float:
    per_user = metrics.ranking_metrics(top, setup.truth, (k,))
    return metrics.summarise(per_user)[f"{base}@{k}"]


def _optimise(
    score: Callable[[Mapping[str, Any]], float],
    space: SearchSpace,
    fixed: Mapping[str, Any],
    n_trials: int,
    timeout: float | None,
    seed: int,
) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: optuna.Trial) -> float:
        params = {**fixed, **suggest(trial, space, fixed)}
        trial.set_user_attr("params", _plain(params))
        value = score(params)
        if not math.isfinite(value):
            raise ConfigError("the metric is not finite for these parameters")
        return value

    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(NextbuyError,))
    return study


def _result(
    model_name: str,
    metric: str,
    fixed: dict[str, Any],
    default_value: float,
    study: optuna.Study,
) -> TuningResult:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value or -math.inf, default=None)
    if best is None or best.value is None or best.value <= default_value:
        best_params, best_value = _plain(fixed), default_value
    else:
        best_params, best_value = dict(best.user_attrs["params"]), float(best.value)
    return TuningResult(
        model_name=model_name,
        metric=metric,
        best_params=best_params,
        best_value=best_value,
        default_value=default_value,
        trials=_trials_frame(study),
    )


def _trials_frame(study: optuna.Study) -> pd.DataFrame:
    rows = [
        {
            "number": t.number,
            "value": t.value,
            "state": t.state.name,
            "seconds": t.duration.total_seconds() if t.duration else math.nan,
            **{f"params_{k}": v for k, v in t.params.items()},
        }
        for t in study.trials
    ]
    return pd.DataFrame(rows)


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as JSON-ready values: models given as members become their specs."""
    out = dict(params)
    members = out.get("members")
    if members:
        out["members"] = [
            {"model": m.name, "params": m.params()} if isinstance(m, Recommender) else dict(m)
            for m in members
        ]
    return out
