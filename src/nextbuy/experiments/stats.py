"""Statistics for A/B tests: tests, intervals, power, sample-ratio checks, always-valid inference.

Conventions: two independent groups, group 1 is the treatment and group 2 the control, so a
difference is ``treatment - control`` and a lift is ``treatment / control - 1``. Intervals
are two-sided at level ``1 - alpha``. Metrics are computed per randomisation unit (a user),
so a ratio such as CTR = clicks / impressions is a ratio of two per-unit means and gets a
delta-method variance rather than a binomial one (Deng, Knoblich & Lu 2018).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import optimize, stats

ArrayLike = Sequence[float] | np.ndarray

PEEKING_METHOD = (
    "Always-valid inference by the mixture sequential probability ratio test (mSPRT) with a "
    "normal mixture (Johari et al. 2017/2022): its p-values and confidence sequences stay valid "
    "however often and whenever the results are looked at, so the dashboard may be watched "
    "continuously and a test stopped early without inflating false positives, and unlike an "
    "alpha-spending plan no schedule of looks has to be fixed in advance."
)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and a ``1 - alpha`` interval."""

    value: float
    std_error: float
    ci_low: float
    ci_high: float

    @property
    def variance(self) -> float:
        return self.std_error**2


@dataclass(frozen=True)
class Comparison:
    """An effect (difference or lift) with interval, test statistic and two-sided p-value."""

    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float


@dataclass(frozen=True)
class SRMResult:
    """Pearson chi-square goodness of fit of unit counts against the planned split."""

    statistic: float
    df: int
    p_value: float
    mismatch: bool
    observed: dict[str, int]
    expected: dict[str, float]


@dataclass(frozen=True)
class RatioMoments:
    """Per-unit sample moments of numerator Y and denominator X (Deng et al. 2018)."""

    n: int
    mean_num: float
    mean_den: float
    var_num: float
    var_den: float
    cov: float


@dataclass(frozen=True)
class SequentialPath:
    """Always-valid p-values and confidence sequence along a stream of looks."""

    p_values: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2))


def _two_sided_p(z: float) -> float:
    return float(2 * stats.norm.sf(abs(z)))


def _nan_test() -> Comparison:
    nan = float("nan")
    return Comparison(nan, nan, nan, nan, nan, nan)


def _normal_estimate(value: float, std_error: float, alpha: float) -> Estimate:
    half = _z(alpha) * std_error
    return Estimate(value, std_error, value - half, value + half)


# --- proportions -----------------------------------------------------------------------


def proportion_ci(successes: float, n: float, alpha: float = 0.05) -> Estimate:
    """Proportion with a Wilson score interval (Wilson 1927; Newcombe 1998).

    Wilson rather than Wald because it stays inside [0, 1] and keeps its coverage for the
    small counts an early or niche variant has.
    """
    if n <= 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, nan)
    p = successes / n
    z = _z(alpha)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Estimate(p, math.sqrt(p * (1 - p) / n), centre - half, centre + half)


def two_proportion_ztest(
    x1: float, n1: float, x2: float, n2: float, alpha: float = 0.05
) -> Comparison:
    """Two-proportion z-test of ``p1 = p2``: pooled standard error for the test, unpooled
    (Wald) for the interval of ``p1 - p2``, the textbook pairing (Agresti 2013, §3.1)."""
    if n1 <= 0 or n2 <= 0:
        return _nan_test()
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    diff = p1 - p2
    z = diff / se_null if se_null > 0 else 0.0
    half = _z(alpha) * se
    return Comparison(diff, se, diff - half, diff + half, z, _two_sided_p(z))


# --- means -----------------------------------------------------------------------------


def mean_ci(values: ArrayLike, alpha: float = 0.05) -> Estimate:
    """Sample mean with a Student-t interval."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        nan = float("nan")
        return Estimate(float(x.mean()) if n else nan, nan, nan, nan)
    m, se = float(x.mean()), float(x.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
    return Estimate(m, se, m - half, m + half)


def welch_from_stats(
    mean1: float,
    var1: float,
    n1: float,
    mean2: float,
    var2: float,
    n2: float,
    alpha: float = 0.05,
) -> Comparison:
    """Welch's unequal-variance t-test of ``mean1 = mean2`` from summary statistics
    (Welch 1947; Satterthwaite degrees of freedom). ``var`` are sample variances (ddof=1)."""
    if n1 < 2 or n2 < 2:
        return _nan_test()
    a, b = var1 / n1, var2 / n2
    se = math.sqrt(a + b)
    diff = mean1 - mean2
    if se == 0:
        return Comparison(diff, 0.0, diff, diff, float("nan"), float("nan"))
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    t = diff / se
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return Comparison(diff, se, diff - half, diff + half, t, float(2 * stats.t.sf(abs(t), df)))


def welch_ttest(a: ArrayLike, b: ArrayLike, alpha: float = 0.05) -> Comparison:
    """Welch's t-test on two samples (revenue per visitor and other per-unit means)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        return _nan_test()
    return welch_from_stats(
        float(x.mean()), float(x.var(ddof=1)), x.size,
        float(y.mean()), float(y.var(ddof=1)), y.size, alpha,
    )  # fmt: skip


# --- delta method ----------------------------------------------------------------------


def ratio_moments(numerators: ArrayLike, denominators: ArrayLike) -> RatioMoments:
    """Means, variances and covariance of per-unit numerators and denominators."""
    y = np.asarray(numerators, dtype=np.float64)
    x = np.asarray(denominators, dtype=np.float64)
    if y.shape != x.shape:
        raise ValueError("numerators and denominators differ in length")
    n = y.size
    if n < 2:
        nan = float("nan")
        return RatioMoments(n, nan, nan, nan, nan, nan)
    cov = np.cov(y, x, ddof=1)
    return RatioMoments(
        n, float(y.mean()), float(x.mean()), float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    )


def delta_ratio_variance(m: RatioMoments) -> float:
    """Variance of ``mean(Y) / mean(X)`` by the delta method (Deng et al. 2018):
    ``(σ_Y²/μ_X² − 2 μ_Y σ_XY/μ_X³ + μ_Y² σ_X²/μ_X⁴) / n``."""
    if m.n < 2 or m.mean_den == 0:
        return float("nan")
    mx, my = m.mean_den, m.mean_num
    v = m.var_num / mx**2 - 2 * my * m.cov / mx**3 + my**2 * m.var_den / mx**4
    return max(v, 0.0) / m.n


def ratio_ci(numerators: ArrayLike, denominators: ArrayLike, alpha: float = 0.05) -> Estimate:
    """Ratio metric ``sum(Y) / sum(X)`` over units (CTR, AOV) with a delta-method interval."""
    m = ratio_moments(numerators, denominators)
    if m.n < 2 or m.mean_den == 0:
        nan = float("nan")
        value = m.mean_num / m.mean_den if m.n and m.mean_den else nan
        return Estimate(value, nan, nan, nan)
    return _normal_estimate(m.mean_num / m.mean_den, math.sqrt(delta_ratio_variance(m)), alpha)


def difference_test(treatment: Estimate, control: Estimate, alpha: float = 0.05) -> Comparison:
    """z-test and interval for ``treatment - control`` of two independent estimates."""
    se = math.sqrt(treatment.variance + control.variance)
    diff = treatment.value - control.value
    if not math.isfinite(se) or se == 0:
        return _nan_test()
    z = diff / se
    half = _z(alpha) * se
    return Comparison(diff, se, diff - half, diff + half, z, _two_sided_p(z))


def relative_lift(treatment: Estimate, control: Estimate, alpha: float = 0.05) -> Comparison:
    """Relative lift ``t / c - 1`` with a delta-method interval for the ratio of two
    independent estimates (Deng et al. 2018): ``Var ≈ σ_t²/c² + t² σ_c²/c⁴``."""
    t, c = treatment.value, control.value
    if not (math.isfinite(t) and math.isfinite(c)) or c == 0:
        return _nan_test()
    se = math.sqrt(treatment.variance / c**2 + t**2 * control.variance / c**4)
    lift = t / c - 1
    if not math.isfinite(se) or se == 0:
        return _nan_test()
    z = lift / se
    half = _z(alpha) * se
    return Comparison(lift, se, lift - half, lift + half, z, _two_sided_p(z))


# --- bootstrap -------------------------------------------------------------------------

# Resample indices are drawn in blocks of at most this many, so memory stays flat for
# millions of units while each block is still one vectorised gather and sum.
_BOOT_BLOCK = 4_000_000


def bootstrap_ratio(
    numerators: ArrayLike,
    denominators: ArrayLike | None = None,
    n_boot: int = 2_000,
    seed: int = 0,
) -> np.ndarray:
    """Bootstrap replicates of ``sum(Y) / sum(X)`` (or of ``mean(Y)`` when X is None),
    resampling units with replacement (Efron & Tibshirani 1993)."""
    y = np.asarray(numerators, dtype=np.float64)
    x = None if denominators is None else np.asarray(denominators, dtype=np.float64)
    n = y.size
    if n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    block = max(1, _BOOT_BLOCK // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        den = x[idx].sum(axis=1) if x is not None else np.full(stop - start, float(n))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:stop] = y[idx].sum(axis=1) / den
    return out


def bootstrap_ci(
    numerators: ArrayLike,
    denominators: ArrayLike | None = None,
    alpha: float = 0.05,
    n_boot: int = 2_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a ratio (or mean) metric."""
    reps = bootstrap_ratio(numerators, denominators, n_boot, seed)
    lo, hi = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_lift_ci(
    num_treatment: ArrayLike,
    den_treatment: ArrayLike | None,
    num_control: ArrayLike,
    den_control: ArrayLike | None,
    alpha: float = 0.05,
    n_boot: int = 2_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the relative lift, groups resampled independently."""
    # Distinct child seeds so the two groups never share a resampling stream.
    s_t, s_c = np.random.SeedSequence(seed).spawn(2)
    t = bootstrap_ratio(num_treatment, den_treatment, n_boot, int(s_t.generate_state(1)[0]))
    c = bootstrap_ratio(num_control, den_control, n_boot, int(s_c.generate_state(1)[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = t / c - 1
    lo, hi = np.nanquantile(lifts, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --- sample ratio mismatch -------------------------------------------------------------


def sample_ratio_mismatch(
    counts: Mapping[str, int], planned_weights: Mapping[str, float], threshold: float = 0.001
) -> SRMResult:
    """Chi-square test of unit counts per variant against the planned split.

    The default alarm at p < 0.001 is the customary one (Kohavi, Tang & Xu 2020,
    "Trustworthy Online Controlled Experiments"; Fabijan et al. 2019, "Diagnosing Sample
    Ratio Mismatch in Online Controlled Experiments"): an SRM means assignment or logging is
    broken and the results should not be trusted, so false alarms must be rare.
    """
    unknown = sorted(set(counts) - set(planned_weights))
    if unknown:
        raise ValueError(f"variants without a planned weight: {', '.join(unknown)}")
    names = list(planned_weights)
    w = np.array([planned_weights[v] for v in names], dtype=np.float64)
    if (w <= 0).any():
        raise ValueError("planned weights must be positive")
    obs = np.array([counts.get(v, 0) for v in names], dtype=np.float64)
    exp = w / w.sum() * obs.sum()
    if obs.sum() == 0 or len(names) < 2:
        nan = float("nan")
        observed = {v: int(c) for v, c in zip(names, obs, strict=True)}
        return SRMResult(nan, len(names) - 1, nan, False, observed, dict.fromkeys(names, 0.0))
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    df = len(names) - 1
    p = float(stats.chi2.sf(chi2, df))
    return SRMResult(
        chi2,
        df,
        p,
        p < threshold,
        {v: int(c) for v, c in zip(names, obs, strict=True)},
        {v: float(e) for v, e in zip(names, exp, strict=True)},
    )


# --- power analysis --------------------------------------------------------------------

PowerMethod = Literal["pooled", "unpooled", "arcsine"]


def _treatment_rate(baseline: float, mde: float, relative: bool) -> float:
    p2 = baseline * (1 + mde) if relative else baseline + mde
    if not 0 < baseline < 1 or not 0 < p2 < 1 or p2 == baseline:
        raise ValueError(f"rates must lie in (0, 1) and differ: {baseline} -> {p2}")
    return p2


def sample_size_two_proportions(
    baseline: float,
    mde: float,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
    method: PowerMethod = "pooled",
) -> int:
    """Units per arm for a two-proportion z-test (equal arms), rounded up.

    ``pooled`` (default; Fleiss, Levin & Paik 2003, ch. 4, without continuity correction):
    ``n = (z_a √(2 p̄ q̄) + z_b √(p1 q1 + p2 q2))² / δ²``, matching the pooled test this module
    runs. ``unpooled`` (Chow, Shao & Wang 2008, §4.2): ``(z_a + z_b)² (p1 q1 + p2 q2) / δ²``.
    ``arcsine``: Cohen's h, ``2 ((z_a + z_b) / h)²`` (Cohen 1988, ch. 6; statsmodels
    ``NormalIndPower``).
    """
    p1 = baseline
    p2 = _treatment_rate(baseline, mde, relative)
    za = _z(alpha) if two_sided else float(stats.norm.ppf(1 - alpha))
    zb = float(stats.norm.ppf(power))
    delta = abs(p2 - p1)
    if method == "pooled":
        pbar = (p1 + p2) / 2
        root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
        n = root**2 / delta**2
    elif method == "unpooled":
        n = (za + zb) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / delta**2
    elif method == "arcsine":
        h = abs(2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1)))
        n = 2 * ((za + zb) / h) ** 2
    else:
        raise ValueError(f"unknown method {method!r}")
    # Guard against 14750.000000001 rounding up because of float noise.
    return math.ceil(n - 1e-9)


def power_two_proportions(
    baseline: float, treatment_rate: float, n_per_arm: float, alpha: float = 0.05,
    two_sided: bool = True,
) -> float:  # fmt: skip
    """Power of the pooled two-proportion z-test under the normal approximation, counting
    rejections in both tails (the closed-form sample size ignores the far tail)."""
    p1, p2 = baseline, treatment_rate
    pbar = (p1 + p2) / 2
    se0 = math.sqrt(2 * pbar * (1 - pbar) / n_per_arm)
    se1 = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n_per_arm)
    delta = p2 - p1
    if not two_sided:
        za = float(stats.norm.ppf(1 - alpha))
        return float(stats.norm.sf((za * se0 - delta) / se1))
    za = _z(alpha)
    return float(
        stats.norm.sf((za * se0 - delta) / se1) + stats.norm.cdf((-za * se0 - delta) / se1)
    )


def minimum_detectable_effect(
    baseline: float,
    n_per_arm: float,
    alpha: float = 0.05,
    power: float = 0.8,
    relative: bool = True,
    two_sided: bool = True,
) -> float:
    """Smallest upward effect the pooled z-test detects with ``power`` at ``n_per_arm``
    (relative to the baseline, or absolute), by solving the power equation."""
    if not 0 < baseline < 1 or n_per_arm <= 0:
        raise ValueError("baseline must lie in (0, 1) and n_per_arm be positive")

    def gap(p2: float) -> float:
        return power_two_proportions(baseline, p2, n_per_arm, alpha, two_sided) - power

    top = 1 - 1e-12
    if gap(top) < 0:
        return float("nan")  # not even a jump to 100 % would be detected
    p2 = optimize.brentq(gap, baseline + 1e-12, top, xtol=1e-12)
    return (p2 - baseline) / baseline if relative else p2 - baseline


def sample_size_means(
    std: float, mde: float, alpha: float = 0.05, power: float = 0.8, two_sided: bool = True
) -> int:
    """Units per arm to detect an absolute difference ``mde`` in a mean (revenue per visitor)
    with a two-sample t-test: the normal formula ``2 σ² (z_a + z_b)² / δ²`` plus Guenther's
    (1981) ``z_a² / 4`` correction for estimating σ, which reproduces Cohen's (1988) tables."""
    if std <= 0 or mde == 0:
        raise ValueError("std must be positive and mde non-zero")
    za = _z(alpha) if two_sided else float(stats.norm.ppf(1 - alpha))
    zb = float(stats.norm.ppf(power))
    n = 2 * (std / mde) ** 2 * (za + zb) ** 2 + za**2 / 4
    return math.ceil(n - 1e-9)


# --- always-valid inference (mSPRT) ----------------------------------------------------


@lru_cache(maxsize=64)
def optimal_mixture_ratio(alpha: float = 0.05) -> float:
    """``r = τ²/V`` that makes the mSPRT confidence sequence narrowest at one chosen look.

    The half-width at variance V is ``√(V (1 + 1/r)(2 log(1/α) + log(1 + r)))``; r ≈ 8 for
    α = 0.05. Tuning τ for one target time follows Howard et al. 2021 ("Time-uniform, nonparametric,
    nonasymptotic confidence sequences", Ann. Statist.).
    """

    def width(log_r: float) -> float:
        r = math.exp(log_r)
        return (1 + 1 / r) * (2 * math.log(1 / alpha) + math.log1p(r))

    res = optimize.minimize_scalar(width, bounds=(-5, 10), method="bounded")
    return math.exp(float(res.x))


def mixture_variance(variance_at_horizon: float, alpha: float = 0.05) -> float:
    """Mixing variance τ² so the sequence is tightest when the effect's variance reaches
    ``variance_at_horizon`` (the planned end of the test). Any fixed τ² is valid; this
    only chooses where the test is most powerful. It must not depend on the data."""
    return optimal_mixture_ratio(alpha) * variance_at_horizon


def msprt_log_lr(
    estimate: float | np.ndarray,
    variance: float | np.ndarray,
    tau2: float | np.ndarray,
    null: float = 0.0,
) -> np.ndarray:
    """log Λ of the normal-mixture SPRT for an effect estimate ~ N(θ, V), mixing θ over
    N(null, τ²) (Johari, Koomen, Pekelis & Walsh 2017, "Peeking at A/B Tests", KDD;
    Robbins 1970): ``Λ = √(V/(V+τ²)) exp(τ² (θ̂ − θ₀)² / (2 V (V+τ²)))``."""
    est = np.asarray(estimate, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    t2 = np.asarray(tau2, dtype=np.float64)
    return 0.5 * np.log(v / (v + t2)) + t2 * (est - null) ** 2 / (2 * v * (v + t2))


def always_valid_pvalue(
    estimate: float | np.ndarray, variance: float | np.ndarray, tau2: float | np.ndarray
) -> np.ndarray:
    """``min(1, 1/Λ)`` at one look. Along a stream take the running minimum
    (``confidence_sequence``), which is what makes it valid under continuous monitoring."""
    return np.minimum(1.0, np.exp(-msprt_log_lr(estimate, variance, tau2)))


def always_valid_ci(
    estimate: float | np.ndarray,
    variance: float | np.ndarray,
    tau2: float | np.ndarray,
    alpha: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """The θ₀ with Λ(θ₀) < 1/α: ``θ̂ ± √(V (V+τ²)/τ² · (2 log(1/α) + log((V+τ²)/V)))``."""
    est = np.asarray(estimate, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    t2 = np.asarray(tau2, dtype=np.float64)
    half = np.sqrt(v * (v + t2) / t2 * (2 * np.log(1 / alpha) + np.log((v + t2) / v)))
    return est - half, est + half


def confidence_sequence(
    estimates: np.ndarray, variances: np.ndarray, tau2: float | np.ndarray, alpha: float = 0.05
) -> SequentialPath:
    """Always-valid p-values (running minimum) and confidence sequence (running intersection)
    over successive looks along the last axis; leading axes are independent streams."""
    est = np.asarray(estimates, dtype=np.float64)
    var = np.asarray(variances, dtype=np.float64)
    p = np.minimum.accumulate(always_valid_pvalue(est, var, tau2), axis=-1)
    lo, hi = always_valid_ci(est, var, tau2, alpha)
    return SequentialPath(p, np.maximum.accumulate(lo, axis=-1), np.minimum.accumulate(hi, axis=-1))
