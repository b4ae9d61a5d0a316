"""A candidate configuration: a model, its parameters, and how events weigh in its matrix."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BASELINES: frozenset[str] = frozenset({"popularity", "trending", "own_history"})
DEFAULT_WEIGHTS = "default"


@dataclass(frozen=True)
class Candidate:
    """What one trial fits and scores, and what `nextbuy train` serves if it wins."""

    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    half_life_days: float | None = None  # decay of the training matrix; None: no decay
    weights: str = DEFAULT_WEIGHTS  # name of an event-weight variant (see `weight_variants`)
    ratings: str = "ignore"  # how a rating's value weighs (matrix.RatingValues.mode)

    @property
    def baseline(self) -> bool:
        return self.model in BASELINES

    @property
    def key(self) -> str:
        """Equal for two candidates that would fit the same model on the same matrix."""
        return json.dumps(self.to_json(), sort_keys=True, default=str)

    @property
    def matrix_key(self) -> tuple[float | None, str, str]:
        return (self.half_life_days, self.weights, self.ratings)

    def label(self) -> str:
        """The model and the parameters that set it apart, for a leaderboard."""
        if self.model == "blend":
            members = self.params.get("members", [])
            weights = self.params.get("weights") or [1.0] * len(members)
            parts = [f"{w:.2g}×{_member(m)}" for m, w in zip(members, weights, strict=False)]
            return "blend: " + " + ".join(parts)
        shown = {k: v for k, v in self.params.items() if k not in HIDDEN_PARAMS}
        if self.model == "hybrid":
            shown = _hybrid_shown(shown)
        return self.model + (f" {_compact(shown)}" if shown else "")

    def matrix_label(self) -> str:
        decay = (
            "no decay" if self.half_life_days is None else f"half-life {self.half_life_days:g} d"
        )
        extra = [] if self.weights == DEFAULT_WEIGHTS else [f"{self.weights} weights"]
        if self.ratings != "ignore":
            extra.append(f"ratings {self.ratings}")
        return ", ".join([decay, *extra])

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "params": _plain(self.params),
            "half_life_days": self.half_life_days,
            "weights": self.weights,
            "ratings": self.ratings,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(
            model=str(data["model"]),
            params=dict(data.get("params") or {}),
            half_life_days=data.get("half_life_days"),
            weights=str(data.get("weights", DEFAULT_WEIGHTS)),
            ratings=str(data.get("ratings", "ignore")),
        )


# Parameters that shape speed or plumbing, not what a model recommends.
HIDDEN_PARAMS = frozenset(
    {
        "prune_items",
        "max_items",
        "num_threads",
        "use_gpu",
        "n_jobs",
        "seed",
        "protocol",
        "max_train_users",
    }
)


def weight_variants(
    weights: Mapping[str, float], present: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Event-weight variants worth trying for the positive event types `present`.

    "default" is the configured weights; with several kinds of positive event, "equal" (every
    kind counts once) and, when purchases are among them, "purchases" (only what was bought
    and rated) put other balances of signal to the test.
    """
    variants = {DEFAULT_WEIGHTS: dict(weights)}
    if len(present) < 2:
        return variants
    positive = {t for t, w in weights.items() if w > 0}
    variants["equal"] = {t: (1.0 if t in positive else 0.0) for t in weights}
    if "purchase" in present:
        variants["purchases"] = {
            t: (w if t in ("purchase", "rating") else 0.0) for t, w in weights.items()
        }
    return variants


def _member(spec: Mapping[str, Any]) -> str:
    """A blend member's family in a word: EASE with side information is told apart."""
    params = spec.get("params") or {}
    if spec["model"] == "ease" and params.get("side_weight", 0) > 0:
        return "ease+side"
    if spec["model"] == "trending":
        return f"trending {params.get('half_life_days', 7.0):g} d"
    return str(spec["model"])


def _hybrid_shown(params: Mapping[str, Any]) -> dict[str, Any]:
    """The hybrid's searched parameters in a few words: generators as their candidate total,
    the ranker by its learning rate and leaves."""
    shown = {k: v for k, v in params.items() if k not in ("generators", "ranker_params")}
    generators = params.get("generators")
    if generators:
        shown["candidates"] = sum(int(g.get("n", 0)) for g in generators)
    ranker = params.get("ranker_params") or {}
    for key, short in (("learning_rate", "lr"), ("num_leaves", "leaves")):
        if key in ranker:
            shown[short] = ranker[key]
    return shown


def _compact(params: Mapping[str, Any]) -> str:
    parts = []
    for name, value in params.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{name}={value}")
    return " ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
