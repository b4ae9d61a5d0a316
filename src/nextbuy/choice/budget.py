"""How long the choice may search, and what each trial is expected to cost before it runs.

The budget is checked before a trial starts: a trial expected to run past it is skipped (and
the leaderboard says so); a started trial finishes. Expectations start from rough per-family
rates measured on two cores (`PRIOR_RATES`) and are replaced by what the family's own
trials took, scaled by the parameters that drive their cost.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nextbuy.choice.candidate import Candidate
from nextbuy.errors import ConfigError

# The default budget for a million events; smaller and larger shops scale by the square root.
REFERENCE_EVENTS = 1_000_000
REFERENCE_SECONDS = 600.0
MIN_AUTO_SECONDS, MAX_AUTO_SECONDS = 120.0, 3600.0
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_budget(text: str | float | None, events: int) -> float:
    """Seconds from "90s", "10m", "1.5h", a number of seconds, or "auto" (scaled to `events`)."""
    if text is None or text == "auto":
        scaled = REFERENCE_SECONDS * math.sqrt(max(events, 1) / REFERENCE_EVENTS)
        return min(max(scaled, MIN_AUTO_SECONDS), MAX_AUTO_SECONDS)
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
        if match is None:
            raise ConfigError(f"budget {text!r}: expected a duration such as 90s, 10m or 1h")
        seconds = float(match.group(1)) * UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"budget {text!r}: must be more than nothing")
    return seconds


@dataclass(frozen=True)
class Sizes:
    """The data sizes trial costs grow with."""

    events: int  # training events
    pairs: int  # nonzero (customer, item) cells of the training matrix
    items: int
    users: int
    scored_users: int  # validation customers whose lists are scored


@dataclass
class Budget:
    seconds: float
    sizes: Sizes
    started: float = field(default_factory=time.monotonic)
    measured: dict[str, tuple[float, float]] = field(default_factory=dict)  # family → (s, units)

    def spent(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.spent()

    def affords(self, candidate: Candidate, share: float = 1.0) -> bool:
        """Whether the candidate's expected cost fits in `share` of what is left."""
        return self.expected(candidate) <= share * self.left()

    def expected(self, candidate: Candidate) -> float:
        units = cost_units(candidate, self.sizes)
        seen = self.measured.get(candidate.model)
        if seen is not None and seen[1] > 0:
            return seen[0] / seen[1] * units
        return PRIOR_RATES.get(candidate.model, DEFAULT_RATE) * units + self._scoring()

    def record(self, candidate: Candidate, seconds: float) -> None:
        units = cost_units(candidate, self.sizes)
        if units > 0 and math.isfinite(seconds):
            self.measured[candidate.model] = (seconds, units)

    def _scoring(self) -> float:
        return SCORE_RATE * self.sizes.scored_users * self.sizes.items


# Seconds per cost unit on two cores, measured on Online Retail's training part (222k pairs,
# 3.6k items, 360k events) and MovieLens 100k; rough on purpose, replaced after one trial.
PRIOR_RATES: dict[str, float] = {
    "popularity": 1e-7,
    "trending": 1e-7,
    "own_history": 1e-7,
    "category_bestsellers": 2e-7,
    "itemknn": 1.5e-6,
    "fbt": 1.5e-6,
    "als": 4e-6,
    "bpr": 2.5e-5,
    "ease": 3e-11,
    "content": 2e-3,
    "hybrid": 1.0,  # its cost units are already seconds (see `_hybrid_seconds`)
}
DEFAULT_RATE = 5e-6
SCORE_RATE = 3e-8  # seconds per (scored user × item): dense scores and their top-k


def cost_units(candidate: Candidate, sizes: Sizes) -> float:
    """What a family's fitting time grows with, for these parameters."""
    params: Mapping[str, Any] = candidate.params
    model = candidate.model
    if model == "ease":
        kept = min(sizes.items, int(params.get("max_items", 20_000)))
        return float(kept) ** 3
    if model == "als":
        return sizes.pairs * params.get("factors", 64) / 64 * params.get("iterations", 15) / 15
    if model == "bpr":
        return sizes.pairs * params.get("factors", 64) / 64 * params.get("iterations", 100) / 100
    if model == "content":
        return float(sizes.items)
    if model == "hybrid":
        return _hybrid_seconds(params, sizes)
    if model == "blend":
        return 0.0  # members are fitted and timed on their own
    return float(sizes.pairs)


def _hybrid_seconds(params: Mapping[str, Any], sizes: Sizes) -> float:
    """Seconds the hybrid is expected to take on two cores: reading the events and building
    features, then per label window and for the final stage an EASE inverse and the dense
    scoring of its customers by its seven generators (calibrated on Online Retail: ~60 s)."""
    windows = int(params.get("label_windows", 3))
    ease = next(
        (g.get("params", {}) for g in params.get("generators") or [] if g.get("name") == "ease"),
        {},
    )
    kept = min(sizes.items, int(ease.get("max_items", 20_000)))
    customers = min(sizes.users, int(params.get("max_train_users") or sizes.users))
    per_stage = PRIOR_RATES["ease"] * kept**3 + 7e-8 * customers * sizes.items
    return 1.6e-4 * sizes.events * (0.4 + 0.2 * windows) + (windows + 1) * per_stage
