"""Experiment config validation and deterministic, layered assignment."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats as sps

from nextbuy.config.experiments import ExperimentConfig, ExperimentsConfig, transition
from nextbuy.errors import ConfigError
from nextbuy.experiments.assignment import (
    assign,
    assign_all,
    assign_layer,
    assign_many,
    bucket,
    buckets,
    experiment_in_layer,
    unit_key,
)

UNITS = [f"user-{i}" for i in range(20_000)]


def _exp(name: str = "exp", **kw: object) -> ExperimentConfig:
    variants = kw.pop("variants", [{"name": "control"}, {"name": "treatment"}])
    return ExperimentConfig.model_validate(
        {"name": name, "status": "running", "variants": variants, **kw}
    )


def test_bucket_is_sha256_of_salt_and_id_and_uniform() -> None:
    digest = hashlib.sha256(b"checkout-test:user-42").hexdigest()
    assert bucket("checkout-test", "user-42") == (int(digest[:16], 16) >> 11) / 2**53
    u = buckets("salt", UNITS)
    assert ((u >= 0) & (u < 1)).all()
    assert sps.kstest(u, "uniform").pvalue > 0.001


def test_assign_is_deterministic_and_follows_weights() -> None:
    exp = _exp(variants=[{"name": "a", "weight": 5}, {"name": "b", "weight": 3},
                         {"name": "c", "weight": 2}])  # fmt: skip
    first = assign_many(exp, UNITS)
    assert (assign_many(exp, UNITS) == first).all()
    assert [assign(exp, u) for u in UNITS[:200]] == list(first[:200])
    counts = [int((first == v).sum()) for v in "abc"]
    expected = [0.5 * len(UNITS), 0.3 * len(UNITS), 0.2 * len(UNITS)]
    assert sps.chisquare(counts, expected).pvalue > 0.001


def test_a_new_salt_reshuffles_units() -> None:
    before = assign_many(_exp(), UNITS)
    after = assign_many(_exp(salt="exp-v2"), UNITS)
    # Independent 50/50 assignments agree for half of the units.
    assert 0.48 < (before == after).mean() < 0.52
    assert _exp().salt == "exp"  # the salt defaults to the name


def test_only_running_experiments_assign() -> None:
    for status in ("draft", "paused", "stopped"):
        exp = _exp(status=status)
        assert assign(exp, "u1") is None
        assert (assign_many(exp, UNITS[:5]) == None).all()  # noqa: E711 - object array
    assert assign(_exp(), "u1") in {"control", "treatment"}


def test_shadow_variants_are_never_shown_but_listed() -> None:
    exp = _exp(variants=[{"name": "control", "holdout": True}, {"name": "new"},
                         {"name": "candidate", "shadow": True, "model_version": "v9"}])  # fmt: skip
    shown = assign_many(exp, UNITS[:5_000])
    assert set(shown) == {"control", "new"}
    result = assign_layer([exp], "user-1")
    assert result.shadows == ("candidate",)
    assert result.holdout == (result.variant == "control")


def test_bandit_weights_override_the_configured_split() -> None:
    exp = _exp(allocation="thompson")
    picks = assign_many(exp, UNITS, weights={"control": 0.1, "treatment": 0.9})
    assert 0.88 < (picks == "treatment").mean() < 0.92
    assert (
        assign_many(exp, UNITS, weights={"control": 0.0, "treatment": 1.0}) == "treatment"
    ).all()


def test_experiments_in_one_layer_are_mutually_exclusive() -> None:
    layer = [_exp("a", layer="home", traffic=0.5), _exp("b", layer="home", traffic=0.3)]
    owners = [experiment_in_layer(layer, f"u:{u}") for u in UNITS]
    names = np.array([o.name if o else "none" for o in owners])
    counts = [int((names == n).sum()) for n in ("a", "b", "none")]
    assert (
        sps.chisquare(counts, [0.5 * len(UNITS), 0.3 * len(UNITS), 0.2 * len(UNITS)]).pvalue > 1e-3
    )
    # Each unit gets a variant from its own experiment only.
    for u, owner in zip(UNITS[:500], owners[:500], strict=True):
        got = assign_all(layer, u)["home"]
        assert got.experiment == (owner.name if owner else None)


def test_layers_are_independent() -> None:
    exps = [_exp("home-a", layer="home", traffic=0.5), _exp("home-b", layer="home", traffic=0.5),
            _exp("email", layer="email")]  # fmt: skip
    rows = [assign_all(exps, u) for u in UNITS[:8_000]]
    home = [f"{r['home'].experiment}/{r['home'].variant}" for r in rows]
    email = [r["email"].variant for r in rows]
    table = np.array(
        [[sum(1 for h, e in zip(home, email, strict=True) if h == hv and e == ev)
          for ev in ("control", "treatment")] for hv in sorted(set(home))]
    )  # fmt: skip
    assert table.shape == (4, 2)
    assert sps.chi2_contingency(table).pvalue > 0.001


def test_adding_or_stopping_an_experiment_keeps_other_units_in_place() -> None:
    a = _exp("a", traffic=0.4)
    before = [assign_layer([a], f"u:{u}").variant for u in UNITS[:3_000]]
    grown = [a, _exp("b", traffic=0.6)]
    after = [assign_layer(grown, f"u:{u}") for u in UNITS[:3_000]]
    assert [r.variant for r in after if r.experiment == "a"] == [v for v in before if v]
    stopped = [a, _exp("b", traffic=0.6, status="stopped")]
    for u, r in zip(UNITS[:3_000], after, strict=True):
        again = assign_layer(stopped, f"u:{u}")
        assert again.experiment == r.experiment
        assert again.variant == (r.variant if r.experiment == "a" else None)


def test_unit_key_uses_session_for_anonymous_visitors() -> None:
    assert unit_key(_exp(), "u1", "s1") == "u:u1"
    assert unit_key(_exp(), None, "s1") == "s:s1"
    assert unit_key(_exp(unit="session"), "u1", "s1") == "s:s1"
    with pytest.raises(ValueError, match="user_id or a session_id"):
        unit_key(_exp(), None, None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variant names repeat"),
        ({"variants": [{"name": "a", "weight": 0}, {"name": "b"}]}, "weight must be positive"),
        (
            {"variants": [{"name": "a", "holdout": True}, {"name": "b", "holdout": True}]},
            "at most one variant",
        ),
        ({"variants": [{"name": "a", "shadow": True}]}, "at least one variant must be shown"),
        ({"variants": [{"name": "a", "colour": "red"}]}, "Extra inputs"),
        ({"allocation": "thompson", "exploration_floor": 0.6}, "exploration_floor"),
        ({"unit": "device"}, "unit"),
    ],
)
def test_config_rejects_invalid_experiments(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _exp(**changes)


def test_layers_cannot_be_overbooked_or_mix_units() -> None:
    with pytest.raises(ValidationError, match=r"add up to 1\.2"):
        ExperimentsConfig(experiments=[_exp("a", traffic=0.6), _exp("b", traffic=0.6)])
    with pytest.raises(ValidationError, match="different units"):
        ExperimentsConfig(experiments=[_exp("a", traffic=0.5),
                                       _exp("b", traffic=0.5, unit="session")])  # fmt: skip
    ok = ExperimentsConfig(experiments=[_exp("a", traffic=1 / 3), _exp("b", traffic=2 / 3)])
    assert ok.get("b").traffic == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="'c' does not exist"):
        ok.get("c")


def test_life_cycle_transitions() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    exp = _exp(status="draft")
    running = transition(exp, "start", now)
    assert running.status == "running" and running.started_at == now
    paused = transition(running, "pause")
    assert transition(paused, "resume").status == "running"
    stopped = transition(paused, "stop", now)
    assert stopped.status == "stopped" and stopped.stopped_at == now
    with pytest.raises(ConfigError, match="is stopped; cannot start"):
        transition(stopped, "start")
    with pytest.raises(ConfigError, match="is draft; cannot pause"):
        transition(exp, "pause")
