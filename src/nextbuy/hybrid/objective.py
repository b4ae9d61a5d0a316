"""The business objective: predicted relevance blended with what an item is worth to the shop.

    score' = p^(1 - w) × value^w,   value = price × margin

p is the ranker's calibrated probability of purchase; w = 0 ranks by relevance alone, w = 1
by value alone. The geometric blend keeps relevance in charge at small w: an item has to be
likely *and* valuable. Example at w = 0.3: a £200 item at 35 % relevance and 30 % margin
scores 0.35^0.7 × 60^0.3 = 1.64, a £50 one at 40 % and 20 % margin 0.40^0.7 × 10^0.3 = 1.05,
so the dearer item goes first although it is a little less likely to be bought.

Items without a price get the catalog's median price; without a margin, `default_margin`
(1.0 makes value the price, i.e. the objective is revenue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nextbuy.errors import ConfigError


@dataclass(frozen=True)
class ValueObjective:
    """Blend weight `w` between relevance (0) and value (1)."""

    weight: float = 0.0
    default_margin: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"objective weight must be between 0 and 1, got {self.weight}")
        if self.default_margin <= 0:
            raise ConfigError("default_margin must be positive")

    def value(self, price: np.ndarray, margin: np.ndarray | None = None) -> np.ndarray:
        """Price × margin per item, with missing prices and margins filled in."""
        price = np.asarray(price, np.float64)
        known = np.isfinite(price) & (price > 0)
        fill = float(np.median(price[known])) if known.any() else 1.0
        price = np.where(known, price, fill)
        if margin is None:
            return price * self.default_margin
        margin = np.asarray(margin, np.float64)
        return price * np.where(np.isfinite(margin) & (margin > 0), margin, self.default_margin)

    def score(
        self, probability: np.ndarray, price: np.ndarray, margin: np.ndarray | None = None
    ) -> np.ndarray:
        """p^(1-w) × value^w, computed in logs so tiny probabilities stay ordered."""
        p = np.clip(np.asarray(probability, np.float64), 1e-12, 1.0)
        value = self.value(price, margin)
        return np.exp((1.0 - self.weight) * np.log(p) + self.weight * np.log(value))


def rank_groups(rows: np.ndarray, scores: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """(n_rows, k) positions into `rows`/`scores` of each row's k best, -1 padded."""
    order = np.lexsort((-scores, rows))
    sorted_rows = rows[order]
    starts = np.searchsorted(sorted_rows, np.arange(n_rows))
    stops = np.searchsorted(sorted_rows, np.arange(n_rows), side="right")
    out = np.full((n_rows, k), -1, np.int64)
    for r in range(n_rows):
        take = order[starts[r] : min(stops[r], starts[r] + k)]
        out[r, : len(take)] = take
    return out


def expected_value(probability: np.ndarray, value: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Per row: Σ p × value over the picked candidates (the list's expected value)."""
    ok = picks >= 0
    safe = np.where(ok, picks, 0)
    return np.where(ok, probability[safe] * value[safe], 0.0).sum(axis=1)


def tradeoff_weights(weights: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5)) -> list[float]:
    """The blend settings an evaluation compares, validated."""
    for w in weights:
        ValueObjective(w)
    return list(weights)
