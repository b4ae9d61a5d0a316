"""Business impact and experiments, from nextbuy.experiments.reporting (the exposure log).

Both read joins over the exposure log and the events that name a list, so they run in the
dashboard's background thread and pages get the cached result.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from nextbuy.experiments.business import business_metrics
from nextbuy.experiments.registry import ExperimentRegistry
from nextbuy.experiments.reporting import results_for

if TYPE_CHECKING:
    from nextbuy.serving.state import ServingState

WINDOW_DAYS = 30
MAX_EXPERIMENTS = 12  # the most recently started; older results stay one API call away
COUNTS = ("impressions", "lists", "clicks", "add_to_carts", "purchases", "revenue")
RATES = ("ctr", "add_to_cart_rate", "purchase_rate", "revenue_per_impression")
CI_METRICS = ("ctr", "add_to_cart_rate", "conversion", "revenue_per_visitor")


def _value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _value(value.item())
    return value


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in frame.to_dict(orient="records"):
        row = {k: _value(v) for k, v in record.items()}
        rpi = row.get("revenue_per_impression")
        row["rpm"] = None if rpi is None else rpi * 1000  # revenue per thousand impressions
        rows.append(row)
    return rows


def _flush(state: ServingState) -> None:
    """Lists served a moment ago still wait in the exposure log's queue: write them first."""
    exposures = getattr(state, "exposures", None)
    if exposures is not None:
        exposures.flush()


# -- business impact ---------------------------------------------------------------------------
def business(state: ServingState) -> dict[str, Any]:
    """Impressions and what followed them over the last WINDOW_DAYS, overall and by
    placement, position and day."""
    path = state.settings.store_path
    since = int((time.time() - WINDOW_DAYS * 86_400) * 1000)
    _flush(state)
    totals = _rows(business_metrics(path, since=since, by=()))
    return {
        "window_days": WINDOW_DAYS,
        "since_ms": since,
        "totals": totals[0] if totals else {},
        "by_placement": _rows(business_metrics(path, since=since, by=("placement",))),
        "by_position": _rows(business_metrics(path, since=since, by=("position",))),
        "by_placement_position": _rows(
            business_metrics(path, since=since, by=("placement", "position"))
        ),
        "by_day": _rows(business_metrics(path, since=since, by=("day",))),
    }


# -- experiments -------------------------------------------------------------------------------
def experiments(state: ServingState) -> list[dict[str, Any]]:
    """Every experiment's variants, live results with intervals and traffic over time."""
    settings = state.settings
    registry = ExperimentRegistry(settings.store_path, settings.experiments)
    found = registry.all()
    found.sort(key=lambda e: (e.status != "running", -_started(e)))
    _flush(state)
    out = []
    for experiment in found[:MAX_EXPERIMENTS]:
        results = results_for(settings, experiment.name).to_json()
        out.append(_experiment(results))
    return out


def _started(experiment: Any) -> float:
    started = getattr(experiment, "started_at", None)
    return started.timestamp() if started is not None else 0.0


def _experiment(results: dict[str, Any]) -> dict[str, Any]:
    config = results["experiment"]
    variants = results.get("variants", [])
    metrics = results.get("metrics", [])
    return {
        "name": config["name"],
        "status": config.get("status"),
        "layer": config.get("layer"),
        "allocation": config.get("allocation"),
        "control": results.get("control"),
        "units": results.get("units", 0),
        "configured_variants": [
            {
                "name": v["name"],
                "weight": v.get("weight"),
                "model_version": v.get("model_version"),
                "holdout": v.get("holdout", False),
                "shadow": v.get("shadow", False),
            }
            for v in config.get("variants", [])
        ],
        "variants": variants,
        "metrics": [m for m in metrics if m.get("metric") in CI_METRICS],
        "srm": results.get("srm"),
        "power": results.get("power"),
        "traffic": results.get("traffic", []),
        "allocations": results.get("allocations", []),
        "over_time": results.get("over_time", []),
        "notes": results.get("notes", []),
    }
