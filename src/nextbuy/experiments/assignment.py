"""Deterministic assignment of users (or sessions) to experiments and variants.

A unit's bucket is ``sha256(salt:unit_id)`` read as a number in [0, 1). Two hashes are used:
the *layer* hash picks which experiment of a layer owns the unit (slices of the layer in
declaration order, each as wide as the experiment's ``traffic``), and the *experiment* hash
picks the variant. Different salts make the two choices, and choices in different layers,
independent (Tang et al. 2010, "Overlapping Experiment Infrastructure", KDD). Everything
here is a pure function of its arguments: no state, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nextbuy.config.experiments import ExperimentConfig

_SCALE = float(2**53)  # 53 bits: every bucket is an exact double in [0, 1)


@dataclass(frozen=True)
class Assignment:
    """Where one unit landed in one layer. ``variant`` None means: serve the current logic."""

    layer: str
    experiment: str | None
    variant: str | None
    shadows: tuple[str, ...] = ()
    holdout: bool = False


def bucket(salt: str, unit_id: str) -> float:
    """Uniform number in [0, 1) from ``sha256(salt:unit_id)``; stable across processes."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _SCALE


def buckets(salt: str, unit_ids: Iterable[str]) -> np.ndarray:
    """``bucket`` for many units at once (for simulations and offline re-assignment)."""
    return np.fromiter((bucket(salt, u) for u in unit_ids), dtype=np.float64)


def layer_salt(layer: str) -> str:
    # Prefixed so that a layer named like an experiment still hashes independently of it.
    return f"layer:{layer}"


def unit_key(experiment: ExperimentConfig, user_id: str | None, session_id: str | None) -> str:
    """The id an experiment randomises on: the user, or the session for anonymous visitors.

    Prefixes keep a user id and a session id that happen to be equal apart.
    """
    if experiment.unit == "user" and user_id:
        return f"u:{user_id}"
    if session_id:
        return f"s:{session_id}"
    if user_id:
        return f"u:{user_id}"
    raise ValueError("a user_id or a session_id is needed to assign a variant")


def _pick(cumulative: np.ndarray, u: float | np.ndarray) -> np.ndarray:
    # side="right" so a bucket exactly on a boundary goes to the next arm; the last edge is 1.
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)


def shown_weights(
    experiment: ExperimentConfig, weights: Mapping[str, float] | None
) -> tuple[list[str], np.ndarray]:
    """The shown variants and their cumulative shares (the configured split, or `weights`)."""
    names = [v.name for v in experiment.shown_variants]
    if weights is None:
        w = np.array([v.weight for v in experiment.shown_variants], dtype=np.float64)
    else:
        w = np.array([float(weights.get(n, 0.0)) for n in names], dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(
            f"experiment {experiment.name!r}: weights must be >= 0 with a positive sum"
        )
    return names, np.cumsum(w) / w.sum()


def assign(
    experiment: ExperimentConfig, unit_id: str, weights: Mapping[str, float] | None = None
) -> str | None:
    """The shown variant for ``unit_id``, or None when the test is not running.

    ``weights`` overrides the configured split (a bandit's current allocation); while it is
    unchanged a unit keeps its variant. Shadow variants are never returned.
    """
    if experiment.status != "running":
        return None
    names, cumulative = shown_weights(experiment, weights)
    return names[int(_pick(cumulative, bucket(experiment.hash_salt, unit_id)))]


def assign_many(
    experiment: ExperimentConfig,
    unit_ids: Sequence[str],
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``assign`` for many units: an object array of variant names (None when not running)."""
    if experiment.status != "running":
        return np.full(len(unit_ids), None, dtype=object)
    names, cumulative = shown_weights(experiment, weights)
    picks = _pick(cumulative, buckets(experiment.hash_salt, unit_ids))
    return np.asarray(names, dtype=object)[picks]


def experiment_in_layer(
    experiments: Sequence[ExperimentConfig], unit_id: str
) -> ExperimentConfig | None:
    """The experiment of this layer that owns ``unit_id``, whatever its status.

    Slices follow declaration order and stay fixed when an experiment is paused or stopped,
    so appending a new experiment to a layer never moves units of the existing ones.
    """
    if not experiments:
        return None
    u = bucket(layer_salt(experiments[0].layer), unit_id)
    edge = 0.0
    for experiment in experiments:
        edge += experiment.traffic
        if u < edge:
            return experiment
    return None


def assign_layer(
    experiments: Sequence[ExperimentConfig],
    unit_id: str,
    weights: Mapping[str, Mapping[str, float]] | None = None,
) -> Assignment:
    """Assignment within one layer (all ``experiments`` must share it)."""
    layers = {e.layer for e in experiments}
    if len(layers) > 1:
        raise ValueError(f"experiments from several layers: {sorted(layers)}")
    layer = next(iter(layers), "default")
    owner = experiment_in_layer(experiments, unit_id)
    if owner is None:
        return Assignment(layer=layer, experiment=None, variant=None)
    variant = assign(owner, unit_id, (weights or {}).get(owner.name))
    if variant is None:
        return Assignment(layer=layer, experiment=owner.name, variant=None)
    return Assignment(
        layer=layer,
        experiment=owner.name,
        variant=variant,
        shadows=tuple(v.name for v in owner.shadow_variants),
        holdout=owner.variant(variant).holdout,
    )


def assign_all(
    experiments: Sequence[ExperimentConfig],
    user_id: str | None,
    session_id: str | None = None,
    weights: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Assignment]:
    """One assignment per layer; ``weights`` maps experiment name to a bandit allocation.

    Each layer randomises on its experiments' unit (see ``unit_key``), which
    ``ExperimentsConfig`` keeps the same within a layer.
    """
    by_layer: dict[str, list[ExperimentConfig]] = {}
    for e in experiments:
        by_layer.setdefault(e.layer, []).append(e)
    return {
        layer: assign_layer(members, unit_key(members[0], user_id, session_id), weights)
        for layer, members in by_layer.items()
    }
