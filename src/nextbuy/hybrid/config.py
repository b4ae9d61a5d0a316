"""What shapes the hybrid pipeline (`HybridConfig`) and its default generators."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from nextbuy.data.content import EmbeddingChoice
from nextbuy.data.schema import DEFAULT_EVENT_WEIGHTS
from nextbuy.errors import ConfigError
from nextbuy.hybrid.candidates import (
    GeneratorSpec,
)

HybridProtocol = Literal["discovery", "repeat"]


def default_generators(protocol: HybridProtocol = "discovery") -> list[GeneratorSpec]:
    """The generator line-up; buy-again joins under the repeat-aware protocol."""
    specs = [
        GeneratorSpec("als", 100, {"factors": 64, "regularization": 1.0, "alpha": 10.0}),
        GeneratorSpec("ease", 100, {"reg": 3000.0, "prune_items": True}),
        GeneratorSpec("itemknn", 50, {"neighbours": 100}),
        GeneratorSpec("recent", 50, {"neighbours": 100}),
        GeneratorSpec("content", 50, {"embeddings": "none", "popularity_weight": 0.1}),
        GeneratorSpec("trending", 30, {"half_life_days": 7.0}),
        GeneratorSpec("category", 30, {}),
    ]
    if protocol == "repeat":
        specs.append(GeneratorSpec("buy_again", 100, {}))
    return specs


@dataclass
class HybridConfig:
    """Everything that shapes the pipeline; JSON-ready so a saved pipeline can be rebuilt."""

    protocol: HybridProtocol = "discovery"
    weights: dict[str, float] | None = None  # event weights (default: nextbuy's)
    half_life_days: float | None = 60.0  # decay of the generators' training matrix
    label_days: float = 30.0
    label_windows: int = 3
    recent_items: int = 5
    # sentence embeddings when the extra is installed; computed once per catalogue change
    embeddings: EmbeddingChoice = "auto"
    generators: list[GeneratorSpec] | None = None
    ranker_params: dict[str, Any] = field(default_factory=dict)
    max_train_users: int | None = None
    # Coverage control: subtract exposure_penalty × log(1 + 1000 × share of active users whose
    # list would hold the item) from its score. 0 ranks by relevance alone.
    exposure_penalty: float = 0.0
    # Users with no history (and no events since) are ordered by this generator's score.
    cold_start_generator: str | None = "trending"
    seed: int = 0
    # LightGBM and BLAS threads. OpenMP spins while it waits, so on cores shared with other
    # work one thread trains ~3x faster than two; raise it on a dedicated machine.
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.protocol not in ("discovery", "repeat"):
            raise ConfigError(f"protocol must be discovery or repeat, not {self.protocol!r}")
        if self.label_days <= 0 or self.label_windows < 1 or self.recent_items < 1:
            raise ConfigError("label_days > 0, label_windows >= 1 and recent_items >= 1 needed")
        if self.generators is None:
            self.generators = default_generators(self.protocol)
        self.generators = [
            g if isinstance(g, GeneratorSpec) else GeneratorSpec(**g) for g in self.generators
        ]

    def event_weights(self) -> dict[str, float]:
        return dict(DEFAULT_EVENT_WEIGHTS if self.weights is None else self.weights)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["generators"] = [asdict(g) for g in self.generators or []]
        return out
