"""Position bias: how much less a lower slot is looked at, estimated from click logs.

Position-based click model (PBM; Craswell et al. 2008, Chuklin, Markov & de Rijke 2015,
"Click Models for Web Search", ch. 3): ``P(click | item i at position k) = θ_k · γ_i``, with θ_k
the probability that position k is examined and γ_i the item's attractiveness. θ and γ are
fitted by expectation-maximisation on (item, position) cells; this is identifiable when
the same item appears at several positions, which rankings that change over time, across
users or through explore slots provide (Wang et al. 2018, "Position Bias Estimation for
Unbiased Learning to Rank in Personal Search", WSDM). The PBM fixes θ only up to a common
factor, so θ is reported relative to position 1 (θ_1 = 1).

The inverse 1/θ_k is the propensity weight used to debias click-based metrics and a
ranker's training data (Joachims, Swaminathan & Schnabel 2017, "Unbiased Learning-to-Rank
with Biased Feedback", WSDM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ArrayLike = np.ndarray | Sequence[float] | pd.Series

# Default cap on a single weight: clipping trades a little bias for much less variance
# when a deep position is rarely examined (Joachims et al. 2017).
DEFAULT_MAX_WEIGHT = 20.0
_EPS = 1e-9


@dataclass(frozen=True)
class PositionBias:
    """Fitted PBM: ``examination[k-1]`` is θ for 1-based position k, relative to position 1."""

    examination: np.ndarray
    attractiveness: pd.Series
    iterations: int
    converged: bool
    log_likelihood: float

    def propensity_weights(self, max_weight: float = DEFAULT_MAX_WEIGHT) -> np.ndarray:
        return propensity_weights(self.examination, max_weight)


def _cells(
    logs: pd.DataFrame, keys: list[str], position: str, clicked: str, max_position: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, pd.Index]:
    pos = logs[position].to_numpy()
    if (pos < 1).any():
        raise ValueError(f"column {position!r}: positions are 1-based")
    frame = logs[[*keys, position]].copy()
    frame["_click"] = logs[clicked].astype(np.float64)
    if max_position is not None:
        frame = frame[frame[position] <= max_position]
    grouped = frame.groupby([*keys, position], sort=False, observed=True)["_click"].agg(
        ["sum", "size"]
    )
    item_keys = grouped.index.droplevel(position)
    item_index = pd.Index(item_keys.unique())
    item_codes = item_index.get_indexer(item_keys)
    positions = grouped.index.get_level_values(position).to_numpy().astype(np.int64) - 1
    return (
        item_codes,
        positions,
        grouped["sum"].to_numpy(),
        grouped["size"].to_numpy().astype(np.float64),
        item_index,
    )


@dataclass(frozen=True)
class _Cells:
    """Impressions aggregated per (item, position): ``clicks`` of ``shown``."""

    item: np.ndarray
    position: np.ndarray
    clicks: np.ndarray
    shown: np.ndarray
    n_positions: int
    n_items: int


def _em_step(cells: _Cells, theta: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    th, gm = theta[cells.position], gamma[cells.item]
    no_click = (cells.shown - cells.clicks) / np.maximum(1 - th * gm, _EPS)
    # Expected counts of "examined" and of "attractive" per cell given the clicks seen: a
    # click means both; a skip is split by Bayes between the two ways of not clicking.
    examined = cells.clicks + no_click * th * (1 - gm)
    attractive = cells.clicks + no_click * (1 - th) * gm
    shown_at = np.bincount(cells.position, weights=cells.shown, minlength=cells.n_positions)
    shown_item = np.bincount(cells.item, weights=cells.shown, minlength=cells.n_items)
    new_theta = np.bincount(cells.position, weights=examined, minlength=cells.n_positions)
    new_gamma = np.bincount(cells.item, weights=attractive, minlength=cells.n_items)
    return (
        np.clip(new_theta / np.maximum(shown_at, _EPS), _EPS, 1.0),
        np.clip(new_gamma / np.maximum(shown_item, _EPS), _EPS, 1.0),
    )


def _log_likelihood(p: np.ndarray, c: np.ndarray, n: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float((c * np.log(p) + (n - c) * np.log1p(-p)).sum())


def estimate_position_bias(
    logs: pd.DataFrame,
    item: str | Sequence[str] = "item_id",
    position: str = "position",
    clicked: str = "clicked",
    max_position: int | None = None,
    max_iter: int = 2_000,
    tol: float = 1e-6,
) -> PositionBias:
    """Fit the position-based model by EM (Chuklin et al. 2015) on impression logs.

    ``logs`` has one row per shown item: ``item`` (one or several key columns, e.g.
    placement and item id, since attractiveness depends on the context), the 1-based
    ``position`` and whether it was ``clicked``. EM creeps along the PBM's flat ridge, so
    it stops once no relative θ moves by more than ``tol`` in an iteration, far below the
    sampling error of any realistic log.
    """
    keys = [item] if isinstance(item, str) else list(item)
    codes, pos, c, n, item_index = _cells(logs, keys, position, clicked, max_position)
    if not (pos == 0).any():
        raise ValueError("no impressions at position 1, which the estimate is relative to")
    cells = _Cells(codes, pos, c, n, int(pos.max()) + 1, len(item_index))
    theta, gamma = np.full(cells.n_positions, 0.5), np.full(cells.n_items, 0.5)
    iterations, converged = 0, False
    while iterations < max_iter and not converged:
        new_theta, gamma = _em_step(cells, theta, gamma)
        # Only θ relative to position 1 is identified, so convergence is judged on that.
        converged = np.abs(new_theta / new_theta[0] - theta / theta[0]).max() < tol
        theta, iterations = new_theta, iterations + 1
    scale = theta[0]
    return PositionBias(
        examination=theta / scale,
        attractiveness=pd.Series(gamma * scale, index=item_index, name="attractiveness"),
        iterations=iterations,
        converged=bool(converged),
        log_likelihood=_log_likelihood(theta[pos] * gamma[codes], c, n),
    )


def propensity_weights(
    examination: ArrayLike, max_weight: float = DEFAULT_MAX_WEIGHT
) -> np.ndarray:
    """Inverse-propensity weights ``1/θ_k`` per position, capped at ``max_weight``."""
    theta = np.asarray(examination, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.minimum(1.0 / np.maximum(theta, 0.0), max_weight)


def _row_weights(positions: ArrayLike, examination: ArrayLike, max_weight: float) -> np.ndarray:
    pos = np.asarray(positions, dtype=np.int64)
    if (pos < 1).any():
        raise ValueError("positions are 1-based")
    w = propensity_weights(examination, max_weight)
    # Positions deeper than any seen in the fit reuse the deepest estimate.
    return w[np.minimum(pos, w.size) - 1]


def ips_ctr(
    clicks: ArrayLike,
    positions: ArrayLike,
    propensities: ArrayLike,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> float:
    """Position-debiased CTR: the click rate had every slot been examined like position 1,
    ``Σ c_i / θ_{k_i} / N`` (inverse propensity scoring)."""
    c = np.asarray(clicks, dtype=np.float64)
    if c.size == 0:
        return float("nan")
    return float((c * _row_weights(positions, propensities, max_weight)).sum() / c.size)


def training_weights(
    positions: ArrayLike,
    clicked: ArrayLike,
    propensities: ArrayLike,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> np.ndarray:
    """Per-row sample weights for ranker training: clicks weighted by ``1/θ_k`` so that a
    click at a rarely-seen slot counts as much as its relevance implies (Joachims et al.
    2017); rows without a click keep weight 1."""
    c = np.asarray(clicked).astype(bool)
    w = _row_weights(positions, propensities, max_weight)
    return np.where(c, w, 1.0)
