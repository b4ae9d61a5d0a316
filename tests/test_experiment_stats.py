"""Experiment statistics against published values, scipy, bootstrap and simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize
from scipy import stats as sps

from nextbuy.errors import DataError
from nextbuy.experiments import stats
from nextbuy.experiments.analysis import METRICS, analyse

# --- reference values ------------------------------------------------------------------


def test_two_proportion_ztest_matches_stat_trek_example() -> None:
    # Stat Trek, "Hypothesis test: difference between proportions", Acme Drug Company:
    # 38 % of 100 women vs 51 % of 200 men caught a cold; pooled p = 0.467, SE = 0.0611,
    # z = -2.13, two-tailed P = 0.033.
    res = stats.two_proportion_ztest(38, 100, 102, 200)
    assert res.estimate == pytest.approx(-0.13)
    assert res.statistic == pytest.approx(-2.1276, abs=5e-4)
    assert res.p_value == pytest.approx(0.0334, abs=5e-4)
    # Second computation: the pooled z-test is the 2x2 chi-square without continuity correction.
    chi2 = sps.chi2_contingency([[38, 62], [102, 98]], correction=False)
    assert res.statistic**2 == pytest.approx(chi2.statistic, rel=1e-10)
    assert res.p_value == pytest.approx(chi2.pvalue, rel=1e-10)


def test_wilson_interval_matches_newcombe() -> None:
    # Newcombe (1998), Stat. Med. 17:857-872, worked example 81/263: Wilson 0.2553 to 0.3662.
    est = stats.proportion_ci(81, 263)
    assert (est.ci_low, est.ci_high) == pytest.approx((0.2553, 0.3662), abs=5e-5)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(1.0, 1.0, 300), rng.lognormal(1.1, 1.5, 170)
    ours = stats.welch_ttest(a, b, alpha=0.1)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_srm_matches_scipy_chisquare() -> None:
    counts = {"a": 50_050, "b": 49_900, "c": 25_050}
    planned = {"a": 2.0, "b": 2.0, "c": 1.0}
    res = stats.sample_ratio_mismatch(counts, planned)
    total = sum(counts.values())
    ref = sps.chisquare(list(counts.values()), [total * 0.4, total * 0.4, total * 0.2])
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert res.df == 2
    assert not res.mismatch
    # 52.5 % instead of 50 % over 10,000 units: chi-square 25, p = 5.7e-7.
    skewed = stats.sample_ratio_mismatch({"a": 5_250, "b": 4_750}, {"a": 1, "b": 1})
    assert skewed.mismatch and skewed.statistic == pytest.approx(25.0)


def test_sample_size_reference_values() -> None:
    # Baseline 10 %, relative MDE 10 % (10 % -> 11 %), alpha 0.05 two-sided, power 0.8.
    # Hand-computed with z_.975 = 1.959964, z_.8 = 0.841621:
    #   unpooled (Chow et al. 2008, §4.2)  (z_a+z_b)² (.09+.0979)/.01²        = 14748.05 -> 14,749
    #   pooled (Fleiss et al. 2003)   (z_a √(2·.105·.895) + z_b √.1879)²/.01² = 14750.79 -> 14,751
    #   arcsine (Cohen's h = 0.0326294; statsmodels NormalIndPower)           = 14744.14 -> 14,745
    # (Evan Miller's calculator script, as published, uses the baseline for the null
    # variance, √(2·.1·.9), which gives 14,313.)
    n = {m: stats.sample_size_two_proportions(0.10, 0.10, method=m) for m in
         ("unpooled", "pooled", "arcsine")}  # fmt: skip
    assert n == {"unpooled": 14_749, "pooled": 14_751, "arcsine": 14_745}
    assert stats.sample_size_two_proportions(0.10, 0.01, relative=False) == 14_751


def test_sample_size_solves_the_power_equation() -> None:
    # Independent route: root of the pooled test's power curve (both tails counted).
    n_root = optimize.brentq(
        lambda n: stats.power_two_proportions(0.10, 0.11, n) - 0.8, 1_000, 100_000
    )
    assert math.ceil(n_root) == stats.sample_size_two_proportions(0.10, 0.10)
    assert stats.minimum_detectable_effect(0.10, 14_751) == pytest.approx(0.10, abs=2e-4)
    assert stats.minimum_detectable_effect(0.10, 14_751, relative=False) == pytest.approx(
        0.01, abs=2e-5
    )


def test_sample_size_gives_the_promised_power_by_simulation() -> None:
    n, sims = 14_751, 20_000
    rng = np.random.default_rng(7)
    x1, x2 = rng.binomial(n, 0.11, sims), rng.binomial(n, 0.10, sims)
    p1, p2, pooled = x1 / n, x2 / n, (x1 + x2) / (2 * n)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * 2 / n)
    power = float((np.abs(z) > sps.norm.ppf(0.975)).mean())
    assert power == pytest.approx(0.80, abs=0.012)  # Monte Carlo SE ~0.003


def _t_test_n_exact(d: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Smallest n per group whose two-sample t-test power (noncentral t) reaches `power`."""
    for n in range(4, 10_000):
        df, nc = 2 * n - 2, d * math.sqrt(n / 2)
        crit = sps.t.ppf(1 - alpha / 2, df)
        if sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc) >= power:
            return n
    raise AssertionError("not reached")


def test_sample_size_means_matches_cohen_tables_and_exact_t_power() -> None:
    # Cohen (1988), ch. 2 sample-size table, alpha .05 two-tailed, power .80:
    # d = .5 -> 64 per group, d = .8 -> 26.
    assert stats.sample_size_means(1.0, 0.5) == 64
    assert stats.sample_size_means(10.0, 8.0) == 26
    for d in (0.2, 0.5, 0.8):
        assert abs(stats.sample_size_means(1.0, d) - _t_test_n_exact(d)) <= 1


# --- delta method ----------------------------------------------------------------------


def _clustered_ctr(n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Users with very different traffic and CTRs, so clicks are correlated within a user."""
    rng = np.random.default_rng(seed)
    impressions = rng.negative_binomial(1, 0.08, n_users) + 1
    user_ctr = rng.beta(0.6, 5.0, n_users)
    return rng.binomial(impressions, user_ctr).astype(float), impressions.astype(float)


def test_delta_ratio_variance_matches_large_bootstrap() -> None:
    clicks, imps = _clustered_ctr(3_000, seed=3)
    delta_var = stats.delta_ratio_variance(stats.ratio_moments(clicks, imps))
    boot_var = stats.bootstrap_ratio(clicks, imps, n_boot=4_000, seed=11).var(ddof=1)
    assert delta_var == pytest.approx(boot_var, rel=0.08)  # bootstrap var has ~2 % SE
    # The binomial variance over impressions ignores clustering and is far too small here.
    ctr = clicks.sum() / imps.sum()
    assert ctr * (1 - ctr) / imps.sum() < 0.5 * delta_var


def test_delta_ratio_reduces_to_mean_variance_with_unit_denominators() -> None:
    y = np.random.default_rng(0).gamma(2.0, 3.0, 500)
    m = stats.ratio_moments(y, np.ones_like(y))
    assert stats.delta_ratio_variance(m) == pytest.approx(y.var(ddof=1) / y.size, rel=1e-12)


def test_delta_lift_interval_matches_bootstrap() -> None:
    ct, it = _clustered_ctr(4_000, seed=5)
    cc, ic = _clustered_ctr(4_000, seed=6)
    lift = stats.relative_lift(stats.ratio_ci(ct, it), stats.ratio_ci(cc, ic))
    lo, hi = stats.bootstrap_lift_ci(ct, it, cc, ic, n_boot=3_000, seed=2)
    width = lift.ci_high - lift.ci_low
    assert (hi - lo) == pytest.approx(width, rel=0.12)
    assert abs((lo + hi) / 2 - (lift.ci_low + lift.ci_high) / 2) < 0.1 * width


def test_bootstrap_is_seeded_and_close_to_delta() -> None:
    clicks, imps = _clustered_ctr(2_000, seed=8)
    assert stats.bootstrap_ci(clicks, imps, seed=4) == stats.bootstrap_ci(clicks, imps, seed=4)
    lo, hi = stats.bootstrap_ci(clicks, imps, n_boot=3_000, seed=4)
    est = stats.ratio_ci(clicks, imps)
    assert (lo, hi) == pytest.approx((est.ci_low, est.ci_high), abs=0.1 * (hi - lo))


# --- A/A simulations: error rates ------------------------------------------------------


def test_fixed_horizon_false_positive_rate_is_alpha() -> None:
    sims, n, alpha = 500, 4_000, 0.05
    rng = np.random.default_rng(2024)
    x1, x2 = rng.binomial(n, 0.05, sims), rng.binomial(n, 0.05, sims)
    z_rate = np.mean([stats.two_proportion_ztest(a, n, b, n).p_value < alpha
                      for a, b in zip(x1, x2, strict=True)])  # fmt: skip
    revenue = rng.lognormal(2.0, 1.2, size=(sims, 2, 400))
    t_rate = np.mean([stats.welch_ttest(r[0], r[1]).p_value < alpha for r in revenue])
    # 500 runs: the rate's standard error is ~0.01.
    assert 0.025 <= z_rate <= 0.08
    assert 0.025 <= t_rate <= 0.08


def test_always_valid_pvalue_survives_peeking_that_breaks_the_fixed_test() -> None:
    sims, n_max, every, alpha, rate = 500, 5_000, 100, 0.05, 0.1
    rng = np.random.default_rng(99)
    looks = np.arange(every, n_max + 1, every)
    a = rng.random((sims, n_max), dtype=np.float32) < rate
    b = rng.random((sims, n_max), dtype=np.float32) < rate
    pa = np.cumsum(a, axis=1)[:, looks - 1] / looks
    pb = np.cumsum(b, axis=1)[:, looks - 1] / looks
    diff = pa - pb
    var = (pa * (1 - pa) + pb * (1 - pb)) / looks
    naive_rate = float((np.abs(diff / np.sqrt(var)) > sps.norm.ppf(1 - alpha / 2)).any(1).mean())
    horizon_var = 2 * rate * (1 - rate) / n_max
    path = stats.confidence_sequence(diff, var, stats.mixture_variance(horizon_var, alpha), alpha)
    valid_rate = float((path.p_values < alpha).any(axis=1).mean())
    # 50 looks: naive peeking rejects a true null several times more often than alpha.
    assert naive_rate > 0.15, f"naive peeking false-positive rate {naive_rate}"
    assert valid_rate <= alpha, f"always-valid false-positive rate {valid_rate}"
    # The confidence sequence covers the true difference (0) at every look as often.
    covered = ((path.ci_low <= 0) & (path.ci_high >= 0)).all(axis=1).mean()
    assert covered >= 1 - alpha


# --- mSPRT closed form -----------------------------------------------------------------


def test_msprt_likelihood_ratio_matches_numerical_mixture() -> None:
    est, var, tau2 = 0.012, 2.5e-5, 4e-5
    sd = math.sqrt(var)

    def integrand(theta: float) -> float:
        lr = sps.norm.pdf(est, theta, sd) / sps.norm.pdf(est, 0.0, sd)
        return lr * sps.norm.pdf(theta, 0.0, math.sqrt(tau2))

    numeric, _ = integrate.quad(integrand, -0.1, 0.1, points=[est], epsabs=1e-12)
    assert math.exp(float(stats.msprt_log_lr(est, var, tau2))) == pytest.approx(numeric, rel=1e-7)


def test_always_valid_interval_edges_sit_on_the_rejection_boundary() -> None:
    est, var, tau2, alpha = 0.3, 0.01, 0.05, 0.05
    lo, hi = stats.always_valid_ci(est, var, tau2, alpha)
    for edge in (lo, hi):
        assert float(stats.msprt_log_lr(est, var, tau2, null=float(edge))) == pytest.approx(
            math.log(1 / alpha)
        )
    # Always-valid intervals are wider than fixed-horizon ones: the price of peeking.
    assert hi - lo > 2 * 1.96 * math.sqrt(var)


def test_optimal_mixture_ratio_minimises_the_width() -> None:
    r = stats.optimal_mixture_ratio(0.05)

    def width(x: float) -> float:
        return (1 + 1 / x) * (2 * math.log(20) + math.log1p(x))

    assert 5 < r < 12
    assert width(r) <= min(width(r * 0.9), width(r * 1.1))


# --- analysis --------------------------------------------------------------------------


def _units(n: int, ctr: dict[str, float], seed: int, shares: dict[str, float]) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = rng.choice(list(shares), n, p=list(shares.values()))
    imps = rng.poisson(6, n) + 1
    user_ctr = np.array([ctr[v] for v in variant]) * rng.gamma(4, 0.25, n)
    clicks = rng.binomial(imps, np.clip(user_ctr, 0, 1))
    orders = rng.binomial(1, 0.04, n) * rng.integers(1, 3, n)
    return pd.DataFrame({
        "variant": variant, "unit_id": [f"u{i}" for i in range(n)], "impressions": imps,
        "clicks": clicks, "add_to_carts": rng.binomial(clicks, 0.3), "orders": orders,
        "revenue": orders * rng.gamma(2.0, 25.0, n),
    })  # fmt: skip


def test_analysis_finds_a_planted_ctr_lift_and_not_an_absent_one() -> None:
    units = _units(20_000, {"control": 0.08, "new": 0.092}, 3, {"control": 0.5, "new": 0.5})
    res = analyse(units, {"control": 1, "new": 1})
    ctr = res.metrics.set_index(["variant", "metric"]).loc[("new", "ctr")]
    assert ctr["lift_ci_low"] < 0.15 < ctr["lift_ci_high"]  # planted relative lift 15 %
    assert ctr["p_value"] < 1e-4 and ctr["p_value_always_valid"] < 0.05 and ctr["significant"]
    assert not res.srm.mismatch and res.control == "control"
    wide = res.wide()
    assert list(wide["variant"]) == ["control", "new"]
    assert {m.name for m in METRICS} <= set(wide.columns)
    assert {"ctr_lift_ci_low", "aov_p_value_always_valid", "units"} <= set(wide.columns)
    assert wide["units"].sum() == 20_000


def test_analysis_always_valid_is_more_conservative_than_fixed() -> None:
    units = _units(6_000, {"a": 0.08, "b": 0.08}, 5, {"a": 0.5, "b": 0.5})
    rows = analyse(units, {"a": 1, "b": 1}).metrics.dropna(subset=["p_value"])
    assert (rows["p_value_always_valid"] >= rows["p_value"]).all()
    assert ((rows["diff_av_ci_high"] - rows["diff_av_ci_low"])
            > (rows["diff_ci_high"] - rows["diff_ci_low"])).all()  # fmt: skip


def test_analysis_flags_srm_and_leaking_units() -> None:
    units = _units(10_000, {"a": 0.08, "b": 0.08}, 6, {"a": 0.54, "b": 0.46})
    leaked = units.iloc[:30].assign(variant=lambda d: np.where(d["variant"] == "a", "b", "a"))
    res = analyse(pd.concat([units, leaked]), {"a": 1, "b": 1})
    assert res.srm.mismatch
    assert res.units_in_several_variants == 30


def test_analysis_bootstrap_intervals_are_close_to_delta() -> None:
    units = _units(4_000, {"a": 0.08, "b": 0.09}, 7, {"a": 0.5, "b": 0.5})
    delta = analyse(units, {"a": 1, "b": 1}).metrics.set_index(["variant", "metric"])
    boot = analyse(units, {"a": 1, "b": 1}, ci_method="bootstrap", n_boot=1_000)
    boot_m = boot.metrics.set_index(["variant", "metric"])
    width = delta.loc[("b", "ctr"), "lift_ci_high"] - delta.loc[("b", "ctr"), "lift_ci_low"]
    got = boot_m.loc[("b", "ctr"), ["lift_ci_low", "lift_ci_high"]].to_numpy(dtype=float)
    want = delta.loc[("b", "ctr"), ["lift_ci_low", "lift_ci_high"]].to_numpy(dtype=float)
    assert np.abs(got - want).max() < 0.15 * width


def test_analysis_rejects_bad_input() -> None:
    units = _units(100, {"a": 0.1}, 1, {"a": 1.0})
    with pytest.raises(DataError, match="missing column"):
        analyse(units.drop(columns="revenue"))
    with pytest.raises(DataError, match="row 3: clicks"):
        analyse(units.assign(clicks=lambda d: d["clicks"].where(d.index != 3, -1)))
    with pytest.raises(DataError, match="control variant 'zz'"):
        analyse(units, control="zz")
    with pytest.raises(DataError, match="without a planned weight: a"):
        analyse(units, {"b": 1}, control="a")
