"""What the automatic choice decided (`Choice`: the leaderboard, the served candidate and
why, the settings it implies) and the statistics of that decision: how much a candidate
learns, and the paired per-customer test a learned winner must pass over the best
baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import norm

from nextbuy.choice.candidate import DEFAULT_WEIGHTS, Candidate
from nextbuy.choice.shape import DataShape
from nextbuy.choice.trials import Trial
from nextbuy.config import Settings

# A learned winner must beat the best baseline beyond the noise of the window: its paired
# per-customer NDCG gain must be significant at this level, Bonferroni-corrected for the
# families searched (the best of many tries looks better than it is), or the baseline serves.
GATE_ALPHA = 0.05
# Among learned candidates within this many standard errors of the best (paired, per
# customer), the simplest is served: the best of hundreds of tries on one window is partly
# luck, and a simpler model that scores within its noise carries less of it.
EQUIVALENT_Z = 1.0
HYBRID_COMPLEXITY = 100  # the hybrid counts as learning more than any blend
DISCOVERY, REPEAT = "discovery", "repeat"


@dataclass
class Choice:
    """What was tried, what won, and why."""

    shape: DataShape
    protocol: str  # the rule in force: "repeat" lists may hold earlier purchases
    protocol_reason: str
    validation_reason: str  # what was held out, and why
    protocols: tuple[str, ...]
    trials: list[Trial]
    winner: Trial
    weights: dict[str, dict[str, float]]  # event-weight variants, by name
    rating_scale: tuple[float, float] | None
    budget_seconds: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def baseline_served(self) -> bool:
        return self.winner.candidate.baseline

    def leaderboard(self, protocol: str | None = None) -> list[Trial]:
        """Scored trials, best first, on `protocol` (default: the one in force)."""
        protocol = protocol or self.protocol
        scored = [t for t in self.trials if protocol in t.scores]
        return sorted(scored, key=lambda t: -t.value(protocol))

    def best_baseline(self, protocol: str | None = None) -> Trial | None:
        protocol = protocol or self.protocol
        found = [t for t in self.leaderboard(protocol) if t.candidate.baseline]
        return found[0] if found else None

    def verdict(self) -> str:
        """One line: what is served and what it beat."""
        winner, base = self.winner, self.best_baseline()
        value = winner.value(self.protocol)
        if self.baseline_served:
            learned = [t for t in self.leaderboard() if not t.candidate.baseline]
            best = (
                f"{learned[0].value(self.protocol):.4f} for the best learned model, "
                f"{learned[0].candidate.label()}"
                if learned
                else "no learned model could fit"
            )
            return (
                f"no learned model beat the baselines on the validation window: serving "
                f"{winner.candidate.label()} (NDCG@10 {value:.4f}; {best})"
            )
        beaten = (
            ""
            if base is None
            else (
                f", {value / base.value(self.protocol) - 1:+.0%} over the best baseline "
                f"({base.candidate.label()}, {base.value(self.protocol):.4f})"
                if base.value(self.protocol) > 0
                else ""
            )
        )
        return f"chose {winner.candidate.label()}: validation NDCG@10 {value:.4f}{beaten}"

    def settings_for(self, settings: Settings) -> Settings:
        """`settings` as the winner is trained with them: its decay, event weights and rating
        values, and whether lists leave out what a customer had."""
        winner = self.winner.candidate
        events = settings.events.model_copy(
            update={
                "weights": dict(self.weights[winner.weights]),
                "custom": {},
                "rating_values": winner.ratings,
                "rating_scale": self.rating_scale,
            }
        )
        training = settings.training.model_copy(
            update={
                "half_life_days": winner.half_life_days,
                "exclude_seen": self.protocol == DISCOVERY,
            }
        )
        return settings.model_copy(update={"events": events, "training": training})

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": self.shape.to_json(),
            "protocol": self.protocol,
            "protocol_reason": self.protocol_reason,
            "validation_reason": self.validation_reason,
            "protocols": list(self.protocols),
            "winner": self.winner.to_json(),
            "baseline_served": self.baseline_served,
            "verdict": self.verdict(),
            "trials": [t.to_json() for t in self.trials],
            "weights": self.weights,
            "rating_scale": None if self.rating_scale is None else list(self.rating_scale),
            "budget_seconds": round(self.budget_seconds, 1),
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
        }


def complexity(trial: Trial) -> tuple[int, int]:
    """How much a candidate learns: a blend by its members, the hybrid most of all; then how
    far its matrix is from the plain one."""
    model = trial.candidate.model
    if model == "blend":
        weights = trial.candidate.params.get("weights") or []
        learned = 1 + sum(1 for w in weights if w)
    else:
        learned = HYBRID_COMPLEXITY if model == "hybrid" else 1
    return learned, matrix_complexity(trial)


def matrix_complexity(trial: Trial) -> int:
    """0 for the plain matrix (no decay, the configured weights, ratings alike), one more for
    each departure from it."""
    candidate = trial.candidate
    return (
        (candidate.half_life_days is not None)
        + (candidate.weights != DEFAULT_WEIGHTS)
        + (candidate.ratings != "ignore")
    )


def gate_z(learned: Sequence[Trial]) -> float:
    """The z a learned winner needs: one-sided GATE_ALPHA over the families searched."""
    families = {family_of(t.candidate) for t in learned} or {"one"}
    return float(norm.ppf(1 - GATE_ALPHA / len(families)))


def paired_z(trial: Trial, other: Trial, protocol: str) -> float:
    """How many standard errors `trial`'s per-customer NDCG@10 lies above `other`'s."""
    ours, theirs = trial.per_user.get(protocol), other.per_user.get(protocol)
    if ours is None or theirs is None or len(ours) != len(theirs) or len(ours) < 2:
        return math.inf if trial.value(protocol) > other.value(protocol) else -math.inf
    gain = ours - theirs
    spread = float(gain.std(ddof=1)) / math.sqrt(len(gain))
    if spread == 0:
        return math.inf if gain.mean() > 0 else -math.inf
    return float(gain.mean()) / spread


def family_of(candidate: Candidate) -> str:
    """The family a candidate belongs to: EASE with side information is a family of its own."""
    if candidate.model == "ease" and candidate.params.get("side_weight", 0) > 0:
        return "ease_side"
    return candidate.model
