"""Which model families fit a shop's data, their starting points and their search spaces.

A family is tried only where its input exists: side information needs shared catalogue
values, category best sellers need categories, the content model needs text or attributes,
frequently-bought-together needs baskets. EASE holds a dense items × items matrix whose
inverse costs O(items³): on large catalogues it keeps the most popular items the budget
affords (`ease_items`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import optuna

from nextbuy.choice.budget import PRIOR_RATES, Sizes
from nextbuy.choice.shape import DataShape
from nextbuy.hybrid.config import default_generators

# (trial, the data's shape, its sizes, the parameters the search starts from) -> parameters
SpaceFunction = Callable[[optuna.Trial, DataShape, Sizes, Mapping[str, Any]], dict[str, Any]]
EASE_MAX_ITEMS = 20_000
EASE_BUDGET_SHARE = 0.15  # of the whole budget, for one EASE fit


def ease_items(sizes: Sizes, budget_seconds: float) -> int:
    """The items EASE keeps: all of them, or as many as one fit in its share of the budget."""
    affordable = (EASE_BUDGET_SHARE * budget_seconds / PRIOR_RATES["ease"]) ** (1 / 3)
    return int(min(sizes.items, EASE_MAX_ITEMS, max(affordable, 1_000)))


def family_defaults(
    shape: DataShape, sizes: Sizes, budget_seconds: float
) -> list[tuple[str, dict[str, Any]]]:
    """(model, parameters) of every family that applies, cheapest first."""
    ease = {"reg": 500.0, "prune_items": True, "max_items": ease_items(sizes, budget_seconds)}
    out: list[tuple[str, dict[str, Any]]] = [
        ("itemknn", {}),
        ("fbt", {}),
        ("ease", ease),
        ("als", {}),
    ]
    if shape.categories:
        out.append(("category_bestsellers", {}))
    if shape.attributes:
        out.append(("ease", {**ease, "side_weight": 2.0}))
    if shape.texts or shape.attributes:
        out.append(("content", {"popularity_weight": 0.3}))
    out.append(("bpr", {}))
    return out


def _ease(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {"reg": trial.suggest_float("reg", 20.0, 20_000.0, log=True)}


def _ease_side(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "reg": trial.suggest_float("reg", 50.0, 5_000.0, log=True),
        "side_weight": trial.suggest_float("side_weight", 0.3, 8.0, log=True),
    }


def _als(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "factors": trial.suggest_categorical("factors", [16, 32, 64, 128]),
        "regularization": trial.suggest_float("regularization", 1e-3, 10.0, log=True),
        "alpha": trial.suggest_float("alpha", 0.1, 50.0, log=True),
        "iterations": trial.suggest_int("iterations", 5, 30),
    }


def _bpr(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "factors": trial.suggest_categorical("factors", [16, 32, 64, 128]),
        "learning_rate": trial.suggest_float("learning_rate", 1e-3, 0.2, log=True),
        "regularization": trial.suggest_float("regularization", 1e-4, 0.1, log=True),
        "iterations": trial.suggest_int("iterations", 20, 300, log=True),
    }


def _itemknn(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "neighbours": trial.suggest_int("neighbours", 10, 500, log=True),
        "weighting": trial.suggest_categorical("weighting", ["bm25", "tfidf", "none"]),
    }
    if params["weighting"] == "bm25":  # k1 and b shape BM25 only; shrink is refused with it
        params["k1"] = trial.suggest_float("k1", 0.2, 3.0)
        params["b"] = trial.suggest_float("b", 0.0, 1.0)
    else:
        params["shrink"] = trial.suggest_float("shrink", 0.0, 200.0)
    return params


def _fbt(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "min_support": trial.suggest_int("min_support", 1, 10),
        "metric": trial.suggest_categorical("metric", ["lift", "confidence"]),
        "neighbours": trial.suggest_int("neighbours", 10, 300, log=True),
    }


def _content(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "popularity_weight": trial.suggest_float("popularity_weight", 0.0, 2.0),
        "categorical_weight": trial.suggest_float("categorical_weight", 0.0, 2.0),
    }


def _category_bestsellers(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    return {"by": trial.suggest_categorical("by", ["users", "events", "weight"])}


FAMILY_SPACES: dict[str, SpaceFunction] = {
    "ease": _ease,
    "ease_side": _ease_side,
    "als": _als,
    "bpr": _bpr,
    "itemknn": _itemknn,
    "fbt": _fbt,
    "content": _content,
    "category_bestsellers": _category_bestsellers,
}


def hybrid_space(
    trial: optuna.Trial, shape: DataShape, sizes: Sizes, base: Mapping[str, Any]
) -> dict[str, Any]:
    """The hybrid's label windows, candidates per generator and LambdaMART's main knobs."""
    scale = trial.suggest_categorical("candidates", [0.5, 1.0, 1.5])
    generators = base.get("generators") or [
        asdict(g) for g in default_generators(base.get("protocol") or "discovery")
    ]
    return {
        "label_windows": trial.suggest_int("label_windows", 1, 3),
        "label_days": trial.suggest_categorical("label_days", [14.0, 30.0, 60.0]),
        "ranker_params": {
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_categorical("num_leaves", [15, 31, 63]),
            "min_child_samples": trial.suggest_categorical("min_child_samples", [20, 50, 100]),
        },
        "generators": [{**g, "n": max(10, round(g["n"] * scale))} for g in generators],
    }
