"""`assign_all` compiled once per plan, for the request path.

`nextbuy.experiments.assignment` rebuilds each experiment's cumulative split with numpy on
every call (~100 µs a layer); here the splits are computed once, with the very same numpy
expressions, and a request only hashes and bisects (two SHA-256 per layer). The result is
identical to `assign_all` for every unit, which tests check on many units and weights.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nextbuy.config.experiments import ExperimentConfig
from nextbuy.experiments.assignment import Assignment, bucket, layer_salt, shown_weights, unit_key


@dataclass(frozen=True)
class _Experiment:
    config: ExperimentConfig
    edge: float  # the layer's slice of this experiment ends here
    running: bool
    names: tuple[str, ...]
    cumulative: tuple[float, ...]
    shadows: tuple[str, ...]
    holdout: frozenset[str]


@dataclass(frozen=True)
class _Layer:
    name: str
    salt: str
    first: ExperimentConfig  # decides the randomisation unit of the layer
    experiments: tuple[_Experiment, ...]


def _cumulative(experiment: ExperimentConfig, weights: Mapping[str, float] | None) -> list:
    # the very floats `assignment.assign` draws against, so both give a unit the same arm
    return shown_weights(experiment, weights)[1].tolist()


class CompiledAssigner:
    """Assignment for a fixed set of experiments and bandit weights."""

    def __init__(
        self,
        experiments: Sequence[ExperimentConfig],
        weights: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        by_layer: dict[str, list[ExperimentConfig]] = {}
        for e in experiments:
            by_layer.setdefault(e.layer, []).append(e)
        weights = weights or {}
        self.layers = tuple(
            self._layer(name, members, weights) for name, members in by_layer.items()
        )

    @staticmethod
    def _layer(
        name: str, members: list[ExperimentConfig], weights: Mapping[str, Mapping[str, float]]
    ) -> _Layer:
        compiled, edge = [], 0.0
        for e in members:
            edge += e.traffic  # accumulated in order, as experiment_in_layer does
            running = e.status == "running"
            compiled.append(
                _Experiment(
                    config=e,
                    edge=edge,
                    running=running,
                    names=tuple(v.name for v in e.shown_variants),
                    cumulative=tuple(_cumulative(e, weights.get(e.name))) if running else (),
                    shadows=tuple(v.name for v in e.shadow_variants),
                    holdout=frozenset(v.name for v in e.variants if v.holdout),
                )
            )
        return _Layer(name, layer_salt(name), members[0], tuple(compiled))

    def assign(self, user_id: str | None, session_id: str | None) -> dict[str, Assignment]:
        """What `assign_all` returns; ValueError when there is neither user nor session."""
        out = {}
        for layer in self.layers:
            unit = unit_key(layer.first, user_id, session_id)
            u = bucket(layer.salt, unit)
            owner = next((e for e in layer.experiments if u < e.edge), None)
            if owner is None:
                out[layer.name] = Assignment(layer=layer.name, experiment=None, variant=None)
            elif not owner.running:
                out[layer.name] = Assignment(layer.name, owner.config.name, None)
            else:
                at = bisect.bisect_right(owner.cumulative, bucket(owner.config.hash_salt, unit))
                variant = owner.names[min(at, len(owner.names) - 1)]
                out[layer.name] = Assignment(
                    layer=layer.name,
                    experiment=owner.config.name,
                    variant=variant,
                    shadows=owner.shadows,
                    holdout=variant in owner.holdout,
                )
        return out
