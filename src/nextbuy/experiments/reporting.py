"""Experiment results from the exposure log: the Python API behind the results route,
``nextbuy experiment report`` and the dashboard (business metrics: ``experiments.business``;
position bias: ``experiments.click_reports``).

```python
from nextbuy.experiments.business import business_metrics
from nextbuy.experiments.reporting import experiment_results
results = experiment_results(settings.store_path, "home-ease-v2")
results.analysis.wide()            # one row per variant: counts, metrics, CIs, lifts, p-values
results.over_time                  # cumulative lift and its bands per look
business_metrics(settings.store_path, by=("placement", "position"))
```
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.config import Settings
from nextbuy.config.experiments import ExperimentConfig
from nextbuy.experiments import stats
from nextbuy.experiments.analysis import ExperimentAnalysis, analyse
from nextbuy.experiments.attribution import HOUR_MS, Attribution, attribute
from nextbuy.experiments.click_reports import (
    click_logs,
    debiased_ctr,
    position_bias_of,
)
from nextbuy.experiments.registry import ExperimentRegistry
from nextbuy.store.outcomes import open_outcome_reader
from nextbuy.store.records import open_allocation_table

TREND_METRICS = ("ctr", "conversion", "revenue_per_visitor")
SEGMENT_METRICS = ("ctr", "conversion")
DEFAULT_MDE = 0.10  # relative lift the power analysis uses when the experiment names none
MAX_SEGMENT_VALUES = 12
MIN_SEGMENT_UNITS = 20  # per arm; below this a segment's interval says nothing


@dataclass
class ExperimentResults:
    """Everything known about one experiment; ``to_json()`` for APIs, frames for charts."""

    experiment: ExperimentConfig
    units: pd.DataFrame
    analysis: ExperimentAnalysis | None
    power: dict[str, Any]
    over_time: pd.DataFrame
    traffic: pd.DataFrame
    allocations: pd.DataFrame
    segments: pd.DataFrame
    shadow: pd.DataFrame
    position_bias: dict[str, Any] | None
    debiased_ctr: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    view_through_hours: float = 24.0

    def summary(self) -> pd.DataFrame:
        """One row per variant: counts, then each metric with interval, lift and p-values."""
        return pd.DataFrame() if self.analysis is None else self.analysis.wide()

    def to_json(self) -> dict[str, Any]:
        analysis = self.analysis
        srm = None if analysis is None or analysis.srm is None else analysis.srm
        return _clean(
            {
                "experiment": json.loads(self.experiment.model_dump_json()),
                "control": None if analysis is None else analysis.control,
                "alpha": self.experiment.alpha,
                "sequential": True,
                "peeking_method": stats.PEEKING_METHOD,
                "view_through_hours": self.view_through_hours,
                "units": len(self.units),
                "variants": _records(self.summary()),
                "metrics": [] if analysis is None else _records(analysis.metrics),
                "srm": None if srm is None else srm.__dict__,
                "units_in_several_variants": (
                    0 if analysis is None else analysis.units_in_several_variants
                ),
                "power": self.power,
                "over_time": _records(self.over_time),
                "traffic": _records(self.traffic),
                "allocations": _records(self.allocations),
                "segments": _records(self.segments),
                "shadow": _records(self.shadow),
                "position_bias": self.position_bias,
                "debiased_ctr": _records(self.debiased_ctr),
                "notes": self.notes,
            }
        )


def results_for(settings: Settings, name: str) -> ExperimentResults:
    """`experiment_results` with the project's configured experiments and window."""
    return experiment_results(
        settings.store_path,
        name,
        configured=settings.experiments,
        view_through_hours=settings.attribution.view_through_hours,
    )


def experiment_results(
    store_path: Path,
    name: str,
    *,
    configured: Sequence[ExperimentConfig] = (),
    view_through_hours: float = 24.0,
    bins: int = 12,
) -> ExperimentResults:
    """Analyse ``name``: per-variant metrics with CIs, lifts, p-values (always-valid ones
    decide significance), SRM, power, lift over time, traffic split, segments, shadow lists
    and position-debiased CTR. NotFoundError for an unknown experiment."""
    experiment = ExperimentRegistry(store_path, configured).get(name)
    data = attribute(store_path, name, view_through_hours)
    units = data.per_unit()
    notes: list[str] = []
    analysis = _analyse(experiment, units, notes) if len(units) else None
    logs = click_logs(store_path, experiment=name)
    bias, theta = position_bias_of(store_path, logs)
    if analysis is None:
        notes.append("No list has been served under this experiment yet.")
    return ExperimentResults(
        experiment=experiment,
        units=units,
        analysis=analysis,
        power=_power(experiment, units, analysis),
        over_time=_over_time(experiment, data, analysis, bins),
        traffic=_traffic(data, bins),
        allocations=allocation_history(store_path, name),
        segments=_segments(store_path, experiment, units, analysis),
        shadow=shadow_comparison(store_path, name, view_through_hours),
        position_bias=bias,
        debiased_ctr=debiased_ctr(logs, theta),
        notes=notes,
        view_through_hours=view_through_hours,
    )


# -- the analysis ---------------------------------------------------------------------------


def _planned(experiment: ExperimentConfig, units: pd.DataFrame) -> dict[str, float] | None:
    """Planned split for the SRM test; none for a bandit, whose split moves on purpose."""
    if experiment.allocation == "thompson":
        return None
    planned = experiment.planned_weights()
    seen = set(units["variant"])
    return planned if seen <= set(planned) else None


def _analyse(
    experiment: ExperimentConfig, units: pd.DataFrame, notes: list[str]
) -> ExperimentAnalysis | None:
    planned = _planned(experiment, units)
    control = experiment.control
    if control not in set(units["variant"]):
        notes.append(f"The control {control!r} has no units yet, so nothing is compared.")
        return None
    result = analyse(
        units,
        planned_weights=planned,
        alpha=experiment.alpha,
        sequential=True,
        control=control,
        horizon_units=_horizon(experiment, units),
    )
    notes.append(
        "Significance is judged on always-valid p-values, because these results can be "
        f"looked at at any time while the test runs. {stats.PEEKING_METHOD}"
    )
    if experiment.allocation == "thompson":
        notes.append(
            "Traffic was moved between arms by Thompson sampling, so the split is not tested "
            "against the planned one (no SRM check), and arms served at different times may "
            "differ for reasons of time as well as of variant."
        )
    elif result.srm is not None and result.srm.mismatch:
        notes.append(
            f"Sample ratio mismatch (p = {result.srm.p_value:.2g}): units are not split as "
            "planned, so assignment or logging is broken and the results should not be trusted."
        )
    if result.units_in_several_variants:
        notes.append(
            f"{result.units_in_several_variants} unit(s) were served more than one variant "
            "(bandit shares moved, or the unit changed between user and session)."
        )
    return result


def _horizon(experiment: ExperimentConfig, units: pd.DataFrame) -> int | None:
    """Planned units per arm: from the power analysis when the experiment names an MDE."""
    if experiment.min_detectable_effect is None:
        return None
    baseline = _baseline_conversion(experiment, units)
    try:
        return stats.sample_size_two_proportions(
            baseline, experiment.min_detectable_effect, alpha=experiment.alpha
        )
    except ValueError:
        return None


def _baseline_conversion(experiment: ExperimentConfig, units: pd.DataFrame) -> float:
    control = units[units["variant"] == experiment.control]
    return float((control["orders"] > 0).mean()) if len(control) else float("nan")


def _power(
    experiment: ExperimentConfig, units: pd.DataFrame, analysis: ExperimentAnalysis | None
) -> dict[str, Any]:
    """Units per arm needed to detect the MDE in conversion, and the MDE reachable now."""
    mde = experiment.min_detectable_effect or DEFAULT_MDE
    baseline = _baseline_conversion(experiment, units)
    per_arm = units.groupby("variant").size()
    out: dict[str, Any] = {
        "metric": "conversion",
        "baseline": baseline,
        "mde_relative": mde,
        "alpha": experiment.alpha,
        "power": 0.8,
        "units_per_arm_now": int(per_arm.min()) if len(per_arm) else 0,
    }
    if not 0 < baseline < 1:
        out["note"] = "no baseline conversion yet"
        return out
    try:
        needed = stats.sample_size_two_proportions(baseline, mde, alpha=experiment.alpha)
    except ValueError:
        needed = None
    now = out["units_per_arm_now"]
    out["units_per_arm_needed"] = needed
    out["mde_now"] = (
        stats.minimum_detectable_effect(baseline, now, alpha=experiment.alpha) if now else None
    )
    out["enough"] = needed is not None and now >= needed
    return out


def _lift_rows(result: ExperimentAnalysis, metrics: Sequence[str]) -> pd.DataFrame:
    frame = result.metrics
    rows = frame[(frame["variant"] != result.control) & frame["metric"].isin(metrics)].copy()
    control = frame[frame["variant"] == result.control].set_index("metric")["value"]
    base = rows["metric"].map(control).replace(0, np.nan)
    # the always-valid interval is on the difference; on the lift scale it is divided by
    # the control's value (which it treats as known, as the delta-method lift nearly does)
    rows["lift_av_low"] = rows["diff_av_ci_low"] / base
    rows["lift_av_high"] = rows["diff_av_ci_high"] / base
    keep = ["variant", "metric", "lift", "lift_ci_low", "lift_ci_high", "lift_av_low",
            "lift_av_high", "p_value", "p_value_always_valid"]  # fmt: skip
    return rows[keep]


def _over_time(
    experiment: ExperimentConfig, data: Attribution, final: ExperimentAnalysis | None, bins: int
) -> pd.DataFrame:
    """Cumulative lift against control at ``bins`` evenly spaced looks."""
    if final is None or data.lists.empty:
        return pd.DataFrame()
    start, end = data.lists["served_at"].min(), data.lists["served_at"].max()
    frames = []
    for cut in np.linspace(start, end, bins + 1)[1:]:
        units = data.until(cut).per_unit()
        if units["variant"].nunique() < 2 or experiment.control not in set(units["variant"]):
            continue
        result = analyse(units, alpha=experiment.alpha, control=experiment.control)
        rows = _lift_rows(result, TREND_METRICS)
        rows.insert(0, "cut_ms", int(cut))
        rows.insert(1, "units", len(units))
        frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _traffic(data: Attribution, bins: int) -> pd.DataFrame:
    """Share of shown lists per variant in ``bins`` equal time windows."""
    lists = data.lists
    if lists.empty:
        return pd.DataFrame(columns=["bin_start_ms", "variant", "lists", "share"])
    edges = np.linspace(lists["served_at"].min(), lists["served_at"].max() + 1, bins + 1)
    which = np.clip(np.searchsorted(edges, lists["served_at"], side="right") - 1, 0, bins - 1)
    counts = (
        lists.assign(bin_start_ms=edges[which].astype(np.int64))
        .groupby(["bin_start_ms", "variant"])
        .size()
        .rename("lists")
        .reset_index()
    )
    counts["share"] = counts["lists"] / counts.groupby("bin_start_ms")["lists"].transform("sum")
    return counts


def allocation_history(store_path: Path, name: str) -> pd.DataFrame:
    """Every stored Thompson allocation: computed_at (ms), variant, weight."""
    records = [
        {"computed_at": at, "variant": variant, "weight": weight}
        for at, weights in open_allocation_table(store_path).history(name)
        for variant, weight in weights.items()
    ]
    return pd.DataFrame(records, columns=["computed_at", "variant", "weight"])


# -- segments -------------------------------------------------------------------------------


def _segment_labels(store_path: Path, experiment: str, units: pd.DataFrame) -> pd.DataFrame:
    """Per user: "history" (new / returning before the first exposure) and every user
    attribute with a few distinct values (region, ...)."""
    reader = open_outcome_reader(store_path)
    first = reader.first_events_of(experiment)
    users = reader.user_attributes_of(experiment)
    labels = units[["user_id", "first_exposure_ms"]].drop_duplicates("user_id")
    labels = labels.merge(first, on="user_id", how="left")
    returning = labels["first_event"] < labels["first_exposure_ms"]
    labels["history"] = np.where(returning, "returning", "new")
    attributes = pd.DataFrame(
        [json.loads(a) if isinstance(a, str) else {} for a in users["attributes"]],
        index=users["user_id"],
    )
    for column in attributes.columns:
        values = attributes[column].dropna()
        if values.map(lambda v: isinstance(v, str | int | bool)).all() and (
            1 < values.nunique() <= MAX_SEGMENT_VALUES
        ):
            labels[str(column)] = labels["user_id"].map(attributes[column].astype(str))
    return labels.drop(columns=["first_event", "first_exposure_ms"])


def _segments(
    store_path: Path, experiment: ExperimentConfig, units: pd.DataFrame,
    analysis: ExperimentAnalysis | None,
) -> pd.DataFrame:  # fmt: skip
    """Lift per segment value for CTR and conversion (read them as exploratory: many
    segments make a few "significant" by chance)."""
    if analysis is None or units["user_id"].isna().all():
        return pd.DataFrame()
    labels = _segment_labels(store_path, experiment.name, units)
    labelled = units.merge(labels, on="user_id", how="left")
    frames = []
    for segment in labels.columns.drop("user_id"):
        for value, group in labelled.groupby(segment):
            per_arm = group.groupby("variant").size()
            if len(per_arm) < 2 or per_arm.min() < MIN_SEGMENT_UNITS:
                continue
            if experiment.control not in per_arm.index:
                continue
            result = analyse(group, alpha=experiment.alpha, control=experiment.control)
            rows = _lift_rows(result, SEGMENT_METRICS)
            rows.insert(0, "segment", segment)
            rows.insert(1, "value", str(value))
            rows.insert(2, "units", len(group))
            frames.append(rows)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# -- shadow variants ------------------------------------------------------------------------


def shadow_comparison(store_path: Path, name: str, window_hours: float = 24.0) -> pd.DataFrame:
    """Shadow lists against the lists shown for the same requests: the share of lists
    holding an item the user then clicked or bought (within the window), and the overlap.

    The shown list has a head start (users click what they see), so compare shadows with
    each other and read the purchase hit rate, which organic purchases also feed, first."""
    read = open_outcome_reader(store_path).shadow_lists(name)
    lists, shown, items, acted = read.lists, read.shown, read.items, read.acted
    if lists.empty:
        return pd.DataFrame()
    paired = shown[shown["recommendation_id"].isin(lists["shadow_of"])]
    both = pd.concat(
        [paired.assign(role="shown"), lists.drop(columns="shadow_of").assign(role="shadow")],
        ignore_index=True,
    )
    window = window_hours * HOUR_MS
    hits = both.merge(items, on="recommendation_id").merge(acted, on=["user_id", "item_id"])
    hits = hits[(hits["ts"] > hits["served_at"]) & (hits["ts"] <= hits["served_at"] + window)]
    out = both.groupby(["role", "variant"]).size().rename("lists").to_frame()
    for kind in ("click", "purchase"):
        hit_lists = (
            hits[hits["event_type"] == kind]
            .groupby(["role", "variant"])["recommendation_id"]
            .nunique()
        )
        out[f"{kind}_hit_rate"] = (hit_lists / out["lists"]).fillna(0.0)
    out["overlap_with_shown"] = _overlap(lists, items)
    return out.reset_index()


def _overlap(lists: pd.DataFrame, items: pd.DataFrame) -> pd.Series:
    """Mean share of a shadow list's items that the shown list also held, per variant."""
    sets = items.groupby("recommendation_id")["item_id"].agg(set)
    shared = [
        len(sets.get(r, set()) & sets.get(s, set())) / max(len(sets.get(r, set())), 1)
        for r, s in zip(lists["recommendation_id"], lists["shadow_of"], strict=True)
    ]
    frame = lists.assign(overlap=shared, role="shadow")
    return frame.groupby(["role", "variant"])["overlap"].mean()


# -- JSON ----------------------------------------------------------------------------------


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame is None or frame.empty:
        return []
    return frame.to_dict(orient="records")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
