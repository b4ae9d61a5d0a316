"""Experiment definitions: variants, traffic, layers and the life cycle of a test.

The same models validate the ``[[experiments]]`` tables of nextbuy.toml and the bodies of the
admin routes; unknown keys are rejected so that a misspelt option fails loudly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nextbuy.errors import ConfigError

Status = Literal["draft", "running", "paused", "stopped"]
Action = Literal["start", "pause", "resume", "stop"]

# Allowed life-cycle moves: a stopped test is final so that its data is never mixed with a
# later run under the same name (start a new experiment with a new salt instead).
_TRANSITIONS: dict[Action, tuple[frozenset[str], Status]] = {
    "start": (frozenset({"draft"}), "running"),
    "pause": (frozenset({"running"}), "paused"),
    "resume": (frozenset({"paused"}), "running"),
    "stop": (frozenset({"draft", "running", "paused"}), "stopped"),
}


class VariantConfig(BaseModel):
    """One arm: a pipeline configuration and its share of the experiment's traffic.

    ``holdout`` marks the arm that gets no personalisation (or the current logic);
    ``shadow`` arms are computed beside the shown one but never shown, so their weight is
    ignored. ``shuffle`` serves the arm's list in random order: the intervention that makes
    position independent of relevance, so position bias can be estimated without confounding
    (Joachims et al. 2017, "RandTop-k").
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    weight: float = Field(default=1.0, ge=0)
    model_version: str | None = None
    placement_overrides: dict[str, Any] | None = None
    holdout: bool = False
    shadow: bool = False
    shuffle: bool = False

    @model_validator(mode="after")
    def _shown_arms_get_traffic(self) -> Self:
        if self.shadow and self.holdout:
            raise ValueError(f"variant {self.name!r}: a shadow variant cannot be the holdout")
        if not self.shadow and self.weight <= 0:
            raise ValueError(f"variant {self.name!r}: weight must be positive")
        return self


class ExperimentConfig(BaseModel):
    """An A/B (or A/B/n) test. ``traffic`` is the share of its layer the test occupies.

    Experiments of one layer split the layer's units between them (mutually exclusive);
    experiments in different layers are assigned independently.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    layer: str = Field(default="default", min_length=1)
    salt: str | None = Field(default=None, description="Hash salt; defaults to the name.")
    unit: Literal["user", "session"] = "user"
    status: Status = "draft"
    traffic: float = Field(default=1.0, gt=0, le=1)
    variants: list[VariantConfig] = Field(min_length=1)
    allocation: Literal["fixed", "thompson"] = "fixed"
    bandit_metric: Literal["ctr", "conversion"] = "ctr"
    exploration_floor: float = Field(default=0.05, ge=0, lt=1)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_detectable_effect: float | None = Field(
        default=None, gt=0, description="Relative lift the test is powered to detect."
    )
    started_at: datetime | None = None
    stopped_at: datetime | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names repeat: {', '.join(repeated)}")
        if sum(v.holdout for v in self.variants) > 1:
            raise ValueError("at most one variant may be the holdout")
        shown = self.shown_variants
        if not shown:
            raise ValueError("at least one variant must be shown (not shadow)")
        if self.allocation == "thompson":
            # The bandit moves traffic only between non-holdout arms; each keeps the floor.
            arms = [v for v in shown if not v.holdout]
            held = sum(v.weight for v in shown if v.holdout) / sum(v.weight for v in shown)
            if self.exploration_floor * len(arms) > 1 - held + 1e-12:
                raise ValueError(
                    f"exploration_floor {self.exploration_floor} × {len(arms)} bandit arms "
                    f"exceeds their {1 - held:g} share of traffic"
                )
        if self.salt is None:
            self.salt = self.name
        return self

    @property
    def hash_salt(self) -> str:
        return self.salt or self.name

    @property
    def shown_variants(self) -> list[VariantConfig]:
        return [v for v in self.variants if not v.shadow]

    @property
    def shadow_variants(self) -> list[VariantConfig]:
        return [v for v in self.variants if v.shadow]

    @property
    def control(self) -> str:
        """The arm lifts are measured against: the holdout, else the first shown variant."""
        holdout = [v.name for v in self.variants if v.holdout]
        return holdout[0] if holdout else self.shown_variants[0].name

    def planned_weights(self) -> dict[str, float]:
        """Configured traffic shares of the shown arms, summing to 1."""
        total = sum(v.weight for v in self.shown_variants)
        return {v.name: v.weight / total for v in self.shown_variants}

    def variant(self, name: str) -> VariantConfig:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


class ExperimentsConfig(BaseModel):
    """All experiments of a shop; checks names and that no layer is over-booked."""

    model_config = ConfigDict(extra="forbid")

    experiments: list[ExperimentConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [e.name for e in self.experiments]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"experiment names repeat: {', '.join(repeated)}")
        for layer, members in self.layers().items():
            # One randomisation unit per layer, or "mutually exclusive" would not hold.
            if len({e.unit for e in members}) > 1:
                raise ValueError(f"layer {layer!r}: experiments randomise on different units")
            booked = sum(e.traffic for e in members)
            # A little slack for shares such as 1/3 written as decimals.
            if booked > 1 + 1e-9:
                raise ValueError(f"layer {layer!r}: traffic shares add up to {booked:g} > 1")
        return self

    def layers(self) -> dict[str, list[ExperimentConfig]]:
        """Experiments per layer, in declaration order (which fixes their slices)."""
        out: dict[str, list[ExperimentConfig]] = {}
        for e in self.experiments:
            out.setdefault(e.layer, []).append(e)
        return out

    def get(self, name: str) -> ExperimentConfig:
        for e in self.experiments:
            if e.name == name:
                return e
        raise ConfigError(f"experiment {name!r} does not exist")


def transition(
    experiment: ExperimentConfig, action: Action, now: datetime | None = None
) -> ExperimentConfig:
    """A copy of ``experiment`` after start/pause/resume/stop; refuses impossible moves."""
    allowed_from, target = _TRANSITIONS[action]
    if experiment.status not in allowed_from:
        raise ConfigError(
            f"experiment {experiment.name!r} is {experiment.status}; cannot {action} it"
        )
    now = now or datetime.now(UTC)
    update: dict[str, Any] = {"status": target}
    if action == "start":
        update["started_at"] = now
    if action == "stop":
        update["stopped_at"] = now
    return experiment.model_copy(update=update)
