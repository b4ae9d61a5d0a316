"""`nextbuy train`: choose on the latest window, train on everything, register, promote.

With no model configured (`model = "auto"`) the automatic choice (`nextbuy.choice`) searches
the model families, their parameters and the event weighting on the latest window of events
and picks the winner, falling back to a baseline when no learned model beats it. A model
named in the configuration is scored beside the baselines and trained as it is. The version
in service is scored on the same window first: a new version is promoted only if it is not
worse than that, and otherwise the serving version stays and the reason is recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from nextbuy import __version__
from nextbuy.choice import Candidate, Choice, choose
from nextbuy.choice.search import Earlier
from nextbuy.choice.trials import Trial
from nextbuy.config import AUTO_MODEL, Settings
from nextbuy.engine import Engine, model_params, rating_values
from nextbuy.errors import DataError
from nextbuy.store.base import Store
from nextbuy.store.registry import ModelRegistry, Version

Step = Callable[[str], None]
IN_SERVICE = "in service"


@dataclass
class TrainOutcome:
    version: Version
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    serving_metrics: dict[str, float] | None = None
    choice: Choice | None = None


def read_interactions(store: Store) -> pd.DataFrame:
    batches = list(store.interactions())
    if not batches:
        raise DataError("the store holds no interactions: run `nextbuy import interactions` first")
    return pa.Table.from_batches(batches).to_pandas()


def train_version(
    settings: Settings,
    store: Store,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    step: Step = lambda _: None,
    budget: str | float | None = None,
) -> TrainOutcome:
    """Choose (or take `model`), train on every event, register the version, promote it if it
    is not worse than the version in service on the same validation window."""
    registry = ModelRegistry(settings.models_dir)
    step("reading events")
    events = read_interactions(store)
    items = store.items()
    items = None if items.empty else items
    serving = registry.serving()
    earlier = [] if serving is None else [_earlier(serving)]
    name = model or settings.training.model
    pinned = None
    if name != AUTO_MODEL:
        chosen = model_params(settings, name) if params is None else params
        ratings = rating_values(settings).mode
        pinned = Candidate(name, chosen, settings.training.half_life_days, ratings=ratings)
    choice = choose(
        events, items, settings, budget=budget, earlier=earlier, pinned=pinned, step=step
    )
    version = _train_and_register(settings, registry, events, items, choice, step)
    serving_trial = next((t for t in choice.trials if t.stage == IN_SERVICE), None)
    promoted, reason = _promotion(settings, choice, serving, serving_trial)
    if promoted:
        registry.promote(version.name, reason)
    serving_metrics = None if serving_trial is None else _metrics(serving_trial, choice)
    return TrainOutcome(
        version, promoted, reason, _metrics(choice.winner, choice), serving_metrics, choice
    )


def _earlier(serving: Version) -> Earlier:
    meta = serving.meta
    candidate = Candidate(
        str(meta["model"]),
        dict(meta.get("params") or {}),
        meta.get("half_life_days"),
        ratings=str((meta.get("ratings") or {}).get("mode", "ignore")),
    )
    return Earlier(IN_SERVICE, candidate, dict(meta.get("weights") or {}))


def _train_and_register(
    settings: Settings,
    registry: ModelRegistry,
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    choice: Choice,
    step: Step,
) -> Version:
    winner = choice.winner.candidate
    trained_with = choice.settings_for(settings)
    step(f"training {winner.label()} on all {len(events):,} events")
    engine = Engine(trained_with, winner.model, dict(winner.params)).fit(events, items, step)
    prepare = getattr(engine.model, "prepare_to_serve", None)
    if prepare is not None and engine.data is not None:
        # the hybrid's lists take a ranker pass per user: done once here, not at each load
        prepare(list(engine.data.user_ids), settings.serving.candidates, step)
    step("saving the new version")
    staged = registry.staging()
    try:
        engine.save(staged)
        return registry.register(staged, _meta(trained_with, choice, events))
    except BaseException:
        registry.discard(staged)
        raise


def _metrics(trial: Trial, choice: Choice) -> dict[str, float]:
    """The trial's scores on the protocol in force, and the other protocol's NDCG@10."""
    out = dict(trial.scores.get(choice.protocol, {}))
    if "users" in out:
        out["validation_users"] = out.pop("users")
    for protocol, scores in trial.scores.items():
        out[f"{protocol}_ndcg@10"] = scores.get("ndcg@10", float("nan"))
    out["fit_seconds"] = trial.fit_seconds
    return out


def _promotion(
    settings: Settings, choice: Choice, serving: Version | None, serving_trial: Trial | None
) -> tuple[bool, str]:
    if serving is None:
        return True, "first version"
    if serving_trial is None or serving_trial.error:
        return True, f"{serving.name} could not be scored on today's window"
    name = settings.training.promotion_metric
    protocol = choice.protocol
    new = choice.winner.scores.get(protocol, {}).get(name, 0.0)
    old = serving_trial.scores.get(protocol, {}).get(name, 0.0)
    floor = old * (1 - settings.training.promotion_tolerance)
    if new >= floor:
        return True, f"{name} {new:.4f} vs {old:.4f} for {serving.name} on the same window"
    return False, (
        f"kept {serving.name}: {name} {new:.4f} is below {old:.4f} by more than the "
        f"{settings.training.promotion_tolerance:.0%} tolerance on the same window"
    )


def _meta(settings: Settings, choice: Choice, events: pd.DataFrame) -> dict[str, Any]:
    winner = choice.winner.candidate
    return {
        "model": winner.model,
        "params": dict(winner.params),
        "metrics": _metrics(choice.winner, choice),
        "trained_at": datetime.now(UTC).isoformat(),
        "nextbuy_version": __version__,
        "events": len(events),
        "last_event": str(events["timestamp"].max()),
        "weights": settings.events.all_weights(),
        "half_life_days": settings.training.half_life_days,
        "ratings": {"mode": winner.ratings, "scale": choice.rating_scale},
        "exclude_seen": choice.protocol == "discovery",
        "protocol": choice.protocol,
        "validation_fraction": settings.training.validation_fraction,
        "choice": choice.to_json(),
    }
