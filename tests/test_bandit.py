"""Thompson-sampling allocation: closed-form P(best), floor, and traffic moving to the best arm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps
from scipy.special import betaln

from nextbuy.config.experiments import ExperimentConfig
from nextbuy.experiments.bandit import (
    apply_exploration_floor,
    experiment_allocation,
    probability_best,
    sample_arm,
    thompson_allocation,
)


def _p_b_beats_a_closed_form(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """P(p_B > p_A) for independent Beta posteriors with integer a_B (Evan Miller, 2015,
    "Formulas for Bayesian A/B Testing")."""
    return sum(
        math.exp(betaln(a_a + i, b_a + b_b) - math.log(b_b + i) - betaln(1 + i, b_b)
                 - betaln(a_a, b_a))
        for i in range(a_b)
    )  # fmt: skip


def test_probability_best_matches_closed_form_and_integration() -> None:
    # Arm A: 40 of 400, arm B: 52 of 410, uniform priors.
    a_a, b_a, a_b, b_b = 41, 361, 53, 359
    closed = _p_b_beats_a_closed_form(a_a, b_a, a_b, b_b)
    numeric, _ = integrate.quad(
        lambda x: sps.beta.pdf(x, a_b, b_b) * sps.beta.cdf(x, a_a, b_a), 0, 1, points=[0.1, 0.13]
    )
    assert closed == pytest.approx(numeric, abs=1e-8)
    mc = probability_best([40, 52], [400, 410], draws=200_000, seed=3)
    assert mc[1] == pytest.approx(closed, abs=0.005)  # MC SE ~0.001
    assert mc.sum() == pytest.approx(1.0)


def test_allocation_is_deterministic_with_a_seed() -> None:
    one = thompson_allocation([10, 12, 9], [200, 190, 210], seed=5)
    assert (one == thompson_allocation([10, 12, 9], [200, 190, 210], seed=5)).all()


def test_floor_keeps_every_arm_and_the_order() -> None:
    w = apply_exploration_floor([0.90, 0.07, 0.02, 0.01], 0.05)
    assert w.sum() == pytest.approx(1.0)
    assert (w >= 0.05 - 1e-12).all()
    # Two arms are lifted to the floor; the other two share the remaining 0.9 pro rata.
    assert w == pytest.approx([0.90 * 0.9 / 0.97, 0.07 * 0.9 / 0.97, 0.05, 0.05])
    assert apply_exploration_floor([0, 0, 0], 0.1) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="impossible"):
        apply_exploration_floor([0.5, 0.5, 0.0], 0.4)


def test_thompson_moves_traffic_to_the_better_arm_and_respects_the_floor() -> None:
    true_ctr = np.array([0.040, 0.050, 0.060])
    rng = np.random.default_rng(11)
    clicks, shown = np.zeros(3), np.zeros(3)
    weights = np.full(3, 1 / 3)
    served = np.zeros(3)
    for batch in range(40):
        n = rng.multinomial(2_000, weights)
        clicks += rng.binomial(n, true_ctr)
        shown += n
        served += n
        weights = thompson_allocation(clicks, shown, floor=0.05, draws=5_000, seed=batch)
        assert (weights >= 0.05 - 1e-12).all() and weights.sum() == pytest.approx(1.0)
    assert weights[2] > 0.85
    assert served[2] > served[1] > served[0]
    assert weights[0] == pytest.approx(0.05)  # the worst arm keeps exactly its floor


def test_sample_arm_draws_from_the_posterior() -> None:
    rng = np.random.default_rng(0)
    picks = np.bincount([sample_arm([40, 52], [400, 410], rng) for _ in range(4_000)], minlength=2)
    closed = _p_b_beats_a_closed_form(41, 361, 53, 359)
    assert picks[1] / 4_000 == pytest.approx(closed, abs=0.03)


def test_experiment_allocation_keeps_the_holdout_share() -> None:
    exp = ExperimentConfig.model_validate({
        "name": "recs", "status": "running", "allocation": "thompson", "exploration_floor": 0.1,
        "variants": [{"name": "holdout", "holdout": True, "weight": 2},
                     {"name": "a", "weight": 4}, {"name": "b", "weight": 4},
                     {"name": "shadow", "shadow": True}],
    })  # fmt: skip
    w = experiment_allocation(exp, {"a": 50, "b": 500}, {"a": 5_000, "b": 5_000})
    assert list(w) == ["holdout", "a", "b"]
    assert w["holdout"] == pytest.approx(0.2)
    assert w["a"] == pytest.approx(0.1) and w["b"] == pytest.approx(0.7)
    fixed = exp.model_copy(update={"allocation": "fixed"})
    assert experiment_allocation(fixed, {}, {}) == {"holdout": 0.2, "a": 0.4, "b": 0.4}
