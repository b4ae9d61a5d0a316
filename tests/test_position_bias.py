"""Position-bias EM recovers planted examination probabilities; IPS removes the bias."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nextbuy.experiments.position_bias import (
    estimate_position_bias,
    ips_ctr,
    propensity_weights,
    training_weights,
)

TRUE_THETA = np.array([1.0, 0.75, 0.56, 0.43, 0.34, 0.27, 0.22, 0.18])


def _logs(lists: int = 25_000, items: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Lists of 8 ranked by a noisy relevance score, so good items sit high more often (the
    confounding a naive per-position CTR mistakes for position bias); clicks follow the PBM."""
    rng = np.random.default_rng(seed)
    gamma = rng.beta(1.5, 5.0, items)
    shown = rng.integers(0, items, size=(lists, 8))
    score = gamma[shown] + rng.normal(0, 0.15, shown.shape)
    order = np.argsort(-score, axis=1)
    ranked = np.take_along_axis(shown, order, axis=1)
    positions = np.broadcast_to(np.arange(1, 9), ranked.shape)
    clicked = rng.random(ranked.shape) < TRUE_THETA[positions - 1] * gamma[ranked]
    logs = pd.DataFrame({
        "item_id": ranked.ravel(), "position": positions.ravel(), "clicked": clicked.ravel(),
    })  # fmt: skip
    return logs, gamma


def test_em_recovers_planted_examination_probabilities() -> None:
    logs, gamma = _logs()
    fit = estimate_position_bias(logs)
    assert fit.converged
    assert fit.examination == pytest.approx(TRUE_THETA, abs=0.03)
    # Attractiveness is on the absolute scale because the planted θ_1 is 1.
    est = fit.attractiveness.reindex(range(len(gamma))).to_numpy()
    assert np.corrcoef(est, gamma)[0, 1] > 0.9
    # The naive ratio of CTRs by position mixes position and relevance and overstates the drop.
    naive = logs.groupby("position")["clicked"].mean().to_numpy()
    assert np.abs(naive / naive[0] - TRUE_THETA).max() > 0.1


def test_context_keys_and_max_position() -> None:
    logs, _ = _logs(lists=8_000, seed=1)
    logs["placement"] = "home"
    fit = estimate_position_bias(logs, item=["placement", "item_id"], max_position=5)
    assert fit.examination.size == 5
    assert fit.examination == pytest.approx(TRUE_THETA[:5], abs=0.06)


def test_ips_ctr_removes_position_bias() -> None:
    logs, gamma = _logs(seed=2)
    truth = gamma[logs["item_id"]].mean()  # click rate if every slot were examined
    naive = logs["clicked"].mean()
    debiased = ips_ctr(logs["clicked"], logs["position"], TRUE_THETA)
    assert debiased == pytest.approx(truth, rel=0.02)
    assert naive < 0.75 * truth
    fitted = estimate_position_bias(logs).examination
    assert ips_ctr(logs["clicked"], logs["position"], fitted) == pytest.approx(truth, rel=0.04)


def test_training_weights_upweight_clicks_at_low_positions() -> None:
    theta = np.array([1.0, 0.5, 0.02])
    w = training_weights([1, 2, 2, 3, 4], [True, True, False, True, True], theta, max_weight=20)
    assert w.tolist() == [1.0, 2.0, 1.0, 20.0, 20.0]  # clipped; position 4 reuses position 3
    assert propensity_weights([1.0, 0.25, 0.0], max_weight=10).tolist() == [1.0, 4.0, 10.0]


def test_rejects_zero_based_positions() -> None:
    logs = pd.DataFrame({"item_id": [1, 2], "position": [0, 1], "clicked": [True, False]})
    with pytest.raises(ValueError, match="1-based"):
        estimate_position_bias(logs)
    with pytest.raises(ValueError, match="1-based"):
        ips_ctr([1], [0], [1.0])
