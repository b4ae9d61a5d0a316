"""`nextbuy train`: validate on the latest window, train on everything, register, promote.

A new version is promoted only if it is not worse than the version in service, both measured
on the same validation window of today's data; otherwise the serving version stays and the
reason is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from nextbuy import __version__
from nextbuy.config import Settings
from nextbuy.engine import Engine, model_params
from nextbuy.errors import DataError
from nextbuy.evaluation.metrics import (
    catalog_coverage,
    ranking_metrics,
    summarise,
    users_with_truth,
)
from nextbuy.matrix import InteractionMatrix
from nextbuy.registry import ModelRegistry, Version
from nextbuy.store.base import Store

Step = Callable[[str], None]
VALIDATION_KS = (5, 10, 20)


@dataclass
class TrainOutcome:
    version: Version
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    serving_metrics: dict[str, float] | None = None


def read_interactions(store: Store) -> pd.DataFrame:
    batches = list(store.interactions())
    if not batches:
        raise DataError("the store holds no interactions: run `nextbuy import interactions` first")
    return pa.Table.from_batches(batches).to_pandas()


def validation_window(events: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): the latest `fraction` of dated events is the validation window."""
    dated = events.dropna(subset=["timestamp"])
    if len(dated) < 10:
        raise DataError("too few dated events to hold out a validation window (need ≥ 10)")
    cut = dated["timestamp"].quantile(1 - fraction)
    return events[~(events["timestamp"] >= cut)], events[events["timestamp"] >= cut]


def validation_metrics(
    settings: Settings,
    model: str,
    params: dict[str, Any],
    train: pd.DataFrame,
    validation: pd.DataFrame,
    items: pd.DataFrame | None,
    step: Step = lambda _: None,
) -> dict[str, float]:
    """Fit on `train`, rank for users who come back in `validation`, score what they did."""
    weights = settings.events.all_weights()
    engine = Engine(settings, model, params).fit(train, items, step)
    data = engine.data
    assert data is not None
    truth = _truth(data, validation, weights, settings.training.exclude_seen)
    users = users_with_truth(truth)
    if len(users) == 0:
        raise DataError("no user of the validation window was seen before it; cannot validate")
    exclude_seen = settings.training.exclude_seen
    top = engine.top_k(list(data.user_ids[users]), max(VALIDATION_KS), exclude_seen)
    metrics = summarise(ranking_metrics(top.items, truth[users], VALIDATION_KS))
    metrics["coverage@10"] = catalog_coverage(top.items[:, :10], data.n_items)
    metrics["validation_users"] = float(len(users))
    return metrics


def _truth(
    data: InteractionMatrix, validation: pd.DataFrame, weights: dict[str, float], exclude_seen: bool
) -> sp.csr_matrix:
    positive = validation[validation["event_type"].map(weights).fillna(0) > 0]
    # The engine predicts what customers buy next: where purchases exist, they are the truth.
    if (positive["event_type"] == "purchase").any():
        positive = positive[positive["event_type"] == "purchase"]
    rows = positive["user_id"].map(data.user_index)
    cols = positive["item_id"].map(data.item_index)
    known = rows.notna() & cols.notna()
    truth = sp.csr_matrix(
        (
            np.ones(int(known.sum()), np.float32),
            (rows[known].astype(int).to_numpy(), cols[known].astype(int).to_numpy()),
        ),
        shape=(data.n_users, data.n_items),
    )
    truth.sum_duplicates()
    truth.data[:] = 1.0
    if exclude_seen:
        truth = truth - truth.multiply(data.matrix > 0)
        truth.eliminate_zeros()
    return sp.csr_matrix(truth)


def train_version(
    settings: Settings,
    store: Store,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    step: Step = lambda _: None,
) -> TrainOutcome:
    model = model or settings.training.model
    params = model_params(settings, model) if params is None else params
    registry = ModelRegistry(settings.models_dir)
    step("reading events")
    events = read_interactions(store)
    items = store.items()
    items = None if items.empty else items
    step("validating on the latest window")
    train, validation = validation_window(events, settings.training.validation_fraction)
    metrics = validation_metrics(settings, model, params, train, validation, items, step)
    serving = registry.serving()
    serving_metrics = None
    if serving is not None:
        step(f"measuring {serving.name} on the same window")
        serving_metrics = validation_metrics(
            settings, serving.meta["model"], serving.meta["params"], train, validation, items, step
        )
    step(f"training {model} on all {len(events):,} events")
    engine = Engine(settings, model, params).fit(events, items, step)
    prepare = getattr(engine.model, "prepare_to_serve", None)
    if prepare is not None and engine.data is not None:
        # the hybrid's lists take a ranker pass per user: done once here, not at each load
        prepare(list(engine.data.user_ids), settings.serving.candidates, step)
    step("saving the new version")
    staged = registry.staging()
    try:
        engine.save(staged)
        version = registry.register(staged, _meta(settings, model, params, metrics, events))
    except BaseException:
        registry.discard(staged)
        raise
    promoted, reason = _promotion(settings, metrics, serving, serving_metrics)
    if promoted:
        registry.promote(version.name, reason)
    return TrainOutcome(version, promoted, reason, metrics, serving_metrics)


def _promotion(
    settings: Settings,
    metrics: dict[str, float],
    serving: Version | None,
    serving_metrics: dict[str, float] | None,
) -> tuple[bool, str]:
    if serving is None or serving_metrics is None:
        return True, "first version"
    name = settings.training.promotion_metric
    new, old = metrics.get(name, 0.0), serving_metrics.get(name, 0.0)
    floor = old * (1 - settings.training.promotion_tolerance)
    if new >= floor:
        return True, f"{name} {new:.4f} vs {old:.4f} for {serving.name} on the same window"
    return False, (
        f"kept {serving.name}: {name} {new:.4f} is below {old:.4f} by more than the "
        f"{settings.training.promotion_tolerance:.0%} tolerance on the same window"
    )


def _meta(
    settings: Settings,
    model: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    events: pd.DataFrame,
) -> dict[str, Any]:
    return {
        "model": model,
        "params": params,
        "metrics": metrics,
        "trained_at": datetime.now(UTC).isoformat(),
        "nextbuy_version": __version__,
        "events": len(events),
        "last_event": str(events["timestamp"].max()),
        "weights": settings.events.all_weights(),
        "half_life_days": settings.training.half_life_days,
        "exclude_seen": settings.training.exclude_seen,
        "validation_fraction": settings.training.validation_fraction,
    }
