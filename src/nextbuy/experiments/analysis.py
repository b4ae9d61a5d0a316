"""Per-variant analysis of an experiment from per-unit totals.

Input: one row per randomisation unit (user or session) and variant with its totals of
impressions, clicks, add-to-carts, orders and revenue over the test. Metrics:

==================== ============================= =====================================
metric               definition                    interval / test against control
==================== ============================= =====================================
ctr                  Σ clicks / Σ impressions      delta method (ratio of means), z-test
add_to_cart_rate     Σ add_to_carts / Σ impressions delta method, z-test
conversion           share of units with an order  Wilson interval, two-proportion z-test
revenue_per_visitor  mean revenue per unit         t interval, Welch t-test
aov                  Σ revenue / Σ orders          delta method, z-test
==================== ============================= =====================================

Ratio metrics are analysed per unit because units, not impressions, are randomised: the
clicks of one user are correlated, and a binomial variance over impressions would be too
small (Deng, Knoblich & Lu 2018). Relative lifts get delta-method intervals. Every
comparison also gets an always-valid p-value and confidence sequence (``stats.PEEKING_METHOD``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from nextbuy.errors import DataError
from nextbuy.experiments import stats
from nextbuy.experiments.stats import Comparison, Estimate, SRMResult

COUNT_COLUMNS = ("impressions", "clicks", "add_to_carts", "orders", "revenue")
REQUIRED_COLUMNS = ("variant", "unit_id", *COUNT_COLUMNS)
# Units per arm at which the always-valid test is tuned to be tightest when no plan is given;
# any fixed value keeps it valid, only its power at a given size changes.
DEFAULT_HORIZON_UNITS = 10_000

MetricKind = Literal["ratio", "proportion", "mean"]
RESULT_COLUMNS = (
    "variant", "metric", "value", "ci_low", "ci_high", "diff", "diff_ci_low", "diff_ci_high",
    "p_value", "lift", "lift_ci_low", "lift_ci_high", "p_value_always_valid",
    "diff_av_ci_low", "diff_av_ci_high",
)  # fmt: skip


@dataclass(frozen=True)
class Metric:
    name: str
    kind: MetricKind
    numerator: str
    denominator: str | None = None


METRICS: tuple[Metric, ...] = (
    Metric("ctr", "ratio", "clicks", "impressions"),
    Metric("add_to_cart_rate", "ratio", "add_to_carts", "impressions"),
    Metric("conversion", "proportion", "orders"),
    Metric("revenue_per_visitor", "mean", "revenue"),
    Metric("aov", "ratio", "revenue", "orders"),
)


@dataclass(frozen=True)
class ExperimentAnalysis:
    """Results: ``metrics`` has one row per (variant, metric); ``variants`` one per variant."""

    metrics: pd.DataFrame
    variants: pd.DataFrame
    srm: SRMResult | None
    control: str
    alpha: float
    sequential: bool
    peeking_method: str
    # Units seen in more than one variant: assignment or attribution is leaking.
    units_in_several_variants: int

    def wide(self) -> pd.DataFrame:
        """One row per variant: counts, then every metric with its interval, lift and
        p-values as ``<metric>``, ``<metric>_ci_low``, ``<metric>_lift``, ... columns."""
        values = self.metrics.set_index(["variant", "metric"]).drop(columns="significant")
        flat = values.unstack("metric")
        flat.columns = [
            metric if field == "value" else f"{metric}_{field}" for field, metric in flat.columns
        ]
        order = [
            c for m in METRICS for c in flat.columns if c == m.name or c.startswith(f"{m.name}_")
        ]
        return self.variants.join(flat[order], on="variant")


def _validate(units: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in units.columns]
    if missing:
        raise DataError(f"experiment units: missing column(s) {', '.join(missing)}")
    frame = units.loc[:, list(REQUIRED_COLUMNS)].copy()
    for col in COUNT_COLUMNS:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values < 0)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"experiment units row {row}: {col} must be a non-negative number, "
                f"got {frame[col].iloc[row]!r}"
            )
        frame[col] = values.astype(np.float64)
    frame["variant"] = frame["variant"].astype(str)
    frame["unit_id"] = frame["unit_id"].astype(str)
    return frame


def _per_unit(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    totals = frame.groupby(["variant", "unit_id"], sort=False, as_index=False)[
        list(COUNT_COLUMNS)
    ].sum()
    variants_per_unit = totals.groupby("unit_id", sort=False)["variant"].nunique()
    return totals, int((variants_per_unit > 1).sum())


def _metric_arrays(group: pd.DataFrame, metric: Metric) -> tuple[np.ndarray, np.ndarray | None]:
    num = group[metric.numerator].to_numpy()
    if metric.kind == "proportion":
        return (num > 0).astype(np.float64), None
    den = None if metric.denominator is None else group[metric.denominator].to_numpy()
    return num, den


def _estimate(group: pd.DataFrame, metric: Metric, alpha: float) -> Estimate:
    num, den = _metric_arrays(group, metric)
    if metric.kind == "ratio":
        return stats.ratio_ci(num, den, alpha)
    if metric.kind == "proportion":
        return stats.proportion_ci(float(num.sum()), num.size, alpha)
    return stats.mean_ci(num, alpha)


def _compare(
    treat: pd.DataFrame, ctrl: pd.DataFrame, est_t: Estimate, est_c: Estimate, metric: Metric,
    alpha: float,
) -> Comparison:  # fmt: skip
    if metric.kind == "proportion":
        xt, _ = _metric_arrays(treat, metric)
        xc, _ = _metric_arrays(ctrl, metric)
        return stats.two_proportion_ztest(float(xt.sum()), xt.size, float(xc.sum()), xc.size, alpha)
    if metric.kind == "mean":
        return stats.welch_ttest(treat[metric.numerator], ctrl[metric.numerator], alpha)
    return stats.difference_test(est_t, est_c, alpha)


def _always_valid(
    est_t: Estimate, est_c: Estimate, n_t: int, n_c: int, horizon: int, alpha: float
) -> tuple[float, float, float]:
    """Always-valid p-value and interval for ``t - c`` at this look.

    τ² is fixed in units of the per-unit standard deviation, so the mixture is the same at
    every look: ``V·n_eff`` estimates σ², and the horizon's variance is σ² / (horizon/2).
    """
    variance = est_t.variance + est_c.variance
    if not (math.isfinite(variance) and variance > 0 and n_t > 0 and n_c > 0):
        nan = float("nan")
        return nan, nan, nan
    n_eff = n_t * n_c / (n_t + n_c)
    tau2 = stats.mixture_variance(variance * n_eff / (horizon / 2), alpha)
    diff = est_t.value - est_c.value
    p = float(stats.always_valid_pvalue(diff, variance, tau2))
    lo, hi = stats.always_valid_ci(diff, variance, tau2, alpha)
    return p, float(lo), float(hi)


@dataclass(frozen=True)
class _Bootstrap:
    alpha: float
    n_boot: int
    seed: int

    def value(self, group: pd.DataFrame, metric: Metric) -> tuple[float, float]:
        num, den = _metric_arrays(group, metric)
        return stats.bootstrap_ci(num, den, self.alpha, self.n_boot, self.seed)

    def lift(self, treat: pd.DataFrame, ctrl: pd.DataFrame, metric: Metric) -> tuple[float, float]:
        num_t, den_t = _metric_arrays(treat, metric)
        num_c, den_c = _metric_arrays(ctrl, metric)
        return stats.bootstrap_lift_ci(
            num_t, den_t, num_c, den_c, self.alpha, self.n_boot, self.seed
        )


def _metric_rows(
    groups: Mapping[str, pd.DataFrame],
    control: str,
    metric: Metric,
    alpha: float,
    horizon: int,
    bootstrap: _Bootstrap | None,
) -> list[dict[str, object]]:
    ctrl = groups[control]
    est_c = _estimate(ctrl, metric, alpha)
    rows: list[dict[str, object]] = []
    for name, group in groups.items():
        est = _estimate(group, metric, alpha)
        row: dict[str, object] = {
            "variant": name, "metric": metric.name, "value": est.value,
            "ci_low": est.ci_low, "ci_high": est.ci_high,
        }  # fmt: skip
        if name != control:
            diff = _compare(group, ctrl, est, est_c, metric, alpha)
            lift = stats.relative_lift(est, est_c, alpha)
            p_av, av_lo, av_hi = _always_valid(est, est_c, len(group), len(ctrl), horizon, alpha)
            row |= {
                "diff": diff.estimate, "diff_ci_low": diff.ci_low, "diff_ci_high": diff.ci_high,
                "p_value": diff.p_value, "lift": lift.estimate, "lift_ci_low": lift.ci_low,
                "lift_ci_high": lift.ci_high, "p_value_always_valid": p_av,
                "diff_av_ci_low": av_lo, "diff_av_ci_high": av_hi,
            }  # fmt: skip
            if bootstrap is not None:
                row["lift_ci_low"], row["lift_ci_high"] = bootstrap.lift(group, ctrl, metric)
        if bootstrap is not None:
            row["ci_low"], row["ci_high"] = bootstrap.value(group, metric)
        rows.append(row)
    return rows


def _variant_table(
    groups: Mapping[str, pd.DataFrame], planned: Mapping[str, float] | None
) -> pd.DataFrame:
    table = pd.DataFrame(
        [
            {"variant": name, "units": len(g), **{c: float(g[c].sum()) for c in COUNT_COLUMNS}}
            for name, g in groups.items()
        ]
    )
    total = table["units"].sum()
    table["observed_share"] = table["units"] / total if total else np.nan
    if planned:
        weight_sum = sum(planned.values())
        table["planned_share"] = table["variant"].map(
            {k: v / weight_sum for k, v in planned.items()}
        )
    return table


def _choose_control(
    names: list[str], control: str | None, planned: Mapping[str, float] | None
) -> str:
    if control is None:
        control = next(iter(planned)) if planned else sorted(names)[0]
    if control not in names:
        raise DataError(f"control variant {control!r} has no units in the data")
    return control


def analyse(
    units: pd.DataFrame,
    planned_weights: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    sequential: bool = True,
    control: str | None = None,
    horizon_units: int | None = None,
    ci_method: Literal["delta", "bootstrap"] = "delta",
    n_boot: int = 2_000,
    seed: int = 0,
) -> ExperimentAnalysis:
    """Analyse an experiment: metrics per variant with intervals, differences, lifts and
    p-values against ``control``, always-valid p-values, and a sample-ratio-mismatch check.

    ``planned_weights`` (variant -> weight, in the config's order) feeds the SRM test and
    names the default control (its first key). ``sequential`` makes ``significant`` use the
    always-valid p-value, which is the right one whenever results are watched as the test
    runs. ``horizon_units`` is the planned units per arm (from the power analysis) at which
    the always-valid test is tuned. ``ci_method="bootstrap"`` swaps the delta-method
    intervals of values and lifts for seeded percentile-bootstrap ones.
    """
    frame = _validate(units)
    totals, leaking = _per_unit(frame)
    names = list(dict.fromkeys(totals["variant"]))
    if planned_weights:
        names = [v for v in planned_weights if v in names] + [
            v for v in names if v not in planned_weights
        ]
    if not names:
        raise DataError("experiment units: no rows to analyse")
    control = _choose_control(names, control, planned_weights)
    by_name = dict(tuple(totals.groupby("variant", sort=False)))
    groups = {name: by_name[name] for name in names}
    horizon = horizon_units or DEFAULT_HORIZON_UNITS
    boot = _Bootstrap(alpha, n_boot, seed) if ci_method == "bootstrap" else None
    rows = [
        row for metric in METRICS
        for row in _metric_rows(groups, control, metric, alpha, horizon, boot)
    ]  # fmt: skip
    metrics = pd.DataFrame(rows).reindex(columns=list(RESULT_COLUMNS))
    p_used = metrics["p_value_always_valid"] if sequential else metrics["p_value"]
    metrics["significant"] = p_used < alpha
    srm = None
    if planned_weights:
        unplanned = [name for name in names if name not in planned_weights]
        if unplanned:
            raise DataError(f"variants without a planned weight: {', '.join(unplanned)}")
        srm = stats.sample_ratio_mismatch(
            {name: len(g) for name, g in groups.items()}, planned_weights
        )
    return ExperimentAnalysis(
        metrics=metrics,
        variants=_variant_table(groups, planned_weights),
        srm=srm,
        control=control,
        alpha=alpha,
        sequential=sequential,
        peeking_method=stats.PEEKING_METHOD,
        units_in_several_variants=leaking,
    )
