"""Thompson-sampling traffic allocation with an exploration floor.

Each arm's rate (CTR or conversion) has a Beta posterior. An arm's traffic share is the
posterior probability that it is the best arm, estimated by Monte Carlo ("randomised
probability matching", Scott 2010, "A modern Bayesian look at the multi-armed bandit";
Thompson 1933). Shares are recomputed in batches and then served through the deterministic
hash assignment, so a user keeps their arm between recomputations. A floor keeps every arm
explored, which also keeps enough data in each arm for the A/B analysis afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nextbuy.config.experiments import ExperimentConfig

ArrayLike = np.ndarray | list[float] | tuple[float, ...]

# Draws are generated in blocks so memory stays flat with many arms or draws.
_DRAW_BLOCK = 1_000_000


def beta_posterior(
    successes: ArrayLike, trials: ArrayLike, prior: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Beta(a + successes, b + failures) per arm; the default prior is uniform."""
    s = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if s.shape != n.shape or (s < 0).any() or (s > n).any():
        raise ValueError("need 0 <= successes <= trials, one pair per arm")
    return prior[0] + s, prior[1] + (n - s)


def probability_best(
    successes: ArrayLike,
    trials: ArrayLike,
    draws: int = 20_000,
    seed: int = 0,
    prior: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Monte Carlo P(arm has the highest rate) under independent Beta posteriors."""
    a, b = beta_posterior(successes, trials, prior)
    k = a.size
    rng = np.random.default_rng(seed)
    wins = np.zeros(k, dtype=np.int64)
    block = max(1, _DRAW_BLOCK // max(k, 1))
    for start in range(0, draws, block):
        m = min(block, draws - start)
        samples = rng.beta(a, b, size=(m, k))
        wins += np.bincount(samples.argmax(axis=1), minlength=k)
    return wins / draws


def apply_exploration_floor(weights: ArrayLike, floor: float) -> np.ndarray:
    """Weights summing to 1 with every arm at least ``floor``.

    Arms under the floor are lifted to it and the remaining mass is shared among the
    others in proportion to their weights, repeated until no arm is under the floor
    (so arms above it keep their relative order and ratios).
    """
    w = np.asarray(weights, dtype=np.float64)
    k = w.size
    if k == 0:
        return w
    if (w < 0).any() or not np.isfinite(w).all():
        raise ValueError("weights must be finite and non-negative")
    if floor < 0 or floor * k > 1 + 1e-12:
        raise ValueError(f"a floor of {floor} for {k} arms is impossible")
    w = w / w.sum() if w.sum() > 0 else np.full(k, 1.0 / k)
    pinned = np.zeros(k, dtype=bool)
    out = w.copy()
    for _ in range(k):
        free = ~pinned
        mass = 1.0 - floor * pinned.sum()
        share = w[free].sum()
        out[free] = w[free] / share * mass if share > 0 else mass / free.sum()
        out[pinned] = floor
        under = free & (out < floor)
        if not under.any():
            break
        pinned |= under
    return out


def thompson_allocation(
    successes: ArrayLike,
    trials: ArrayLike,
    floor: float = 0.05,
    draws: int = 20_000,
    seed: int = 0,
    prior: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Traffic shares: probability of being best, with an exploration floor per arm."""
    return apply_exploration_floor(probability_best(successes, trials, draws, seed, prior), floor)


def sample_arm(
    successes: ArrayLike,
    trials: ArrayLike,
    rng: np.random.Generator,
    prior: tuple[float, float] = (1.0, 1.0),
) -> int:
    """One Thompson draw: the arm whose sampled rate is highest (per-request allocation)."""
    a, b = beta_posterior(successes, trials, prior)
    return int(rng.beta(a, b).argmax())


def experiment_allocation(
    experiment: ExperimentConfig,
    successes: Mapping[str, float],
    trials: Mapping[str, float],
    draws: int = 20_000,
    seed: int = 0,
) -> dict[str, float]:
    """Traffic weights for the shown variants of a Thompson-allocated experiment.

    The holdout keeps its planned share: it is the untouched baseline the experiment is
    measured against, so the bandit only moves traffic between the other arms. The floor
    is a share of the whole experiment's traffic.
    """
    planned = experiment.planned_weights()
    holdout = [v.name for v in experiment.shown_variants if v.holdout]
    arms = [name for name in planned if name not in holdout]
    held = sum(planned[h] for h in holdout)
    if experiment.allocation != "thompson" or len(arms) < 2:
        return planned
    s = np.array([successes.get(a, 0.0) for a in arms])
    n = np.array([trials.get(a, 0.0) for a in arms])
    floor = experiment.exploration_floor / (1 - held)
    shares = thompson_allocation(s, n, floor, draws, seed)
    weights = {a: float(w * (1 - held)) for a, w in zip(arms, shares, strict=True)}
    weights.update({h: planned[h] for h in holdout})
    return {name: weights[name] for name in planned}
