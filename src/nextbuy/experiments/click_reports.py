"""Position bias in the served lists: the click logs, the position-based model fitted on them
(from lists served in random order when there are any), and click-through rates with the
bias taken out; what click-trained ranking learns from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.errors import DataError
from nextbuy.experiments.position_bias import (
    PositionBias,
    estimate_position_bias,
    ips_ctr,
    training_weights,
)
from nextbuy.store.outcomes import open_outcome_reader


def click_logs(
    store_path: Path,
    since_ms: int | None = None,
    experiment: str | None = None,
    shuffled: bool | None = None,
) -> pd.DataFrame:
    """One row per shown item: recommendation_id, user_id, placement, variant (when an
    experiment is named), shuffled (list served in random order), item_id, position,
    clicked (a click on it was sent with the list's id). ``shuffled`` keeps only lists
    served in random order (True) or in ranked order (False)."""
    return open_outcome_reader(store_path).click_logs(since_ms, experiment, shuffled)


def fit_position_bias(
    logs: pd.DataFrame, source: str = "auto", max_position: int | None = None
) -> tuple[PositionBias, str]:
    """PBM fit on click logs, and which lists it used.

    A personalised ranking puts what a user likes on top, and the PBM (attractiveness per
    item, not per user) reads that as examination: only lists served in random order
    (``shuffle`` variants) separate the two. ``source``: "shuffled", "all", or "auto"
    (shuffled lists when there are any)."""
    shuffled = logs[logs["shuffled"] == 1]
    if source == "shuffled" or (source == "auto" and shuffled["clicked"].any()):
        logs, source = shuffled, "shuffled"
    else:
        source = "all"
    if logs.empty or not logs["clicked"].any():
        raise DataError("no clicks with a recommendation_id logged yet: nothing to estimate from")
    fitted = estimate_position_bias(logs, item=["placement", "item_id"], max_position=max_position)
    return fitted, source


def position_bias(
    store_path: Path,
    since_ms: int | None = None,
    experiment: str | None = None,
    max_position: int | None = None,
    source: str = "auto",
) -> PositionBias:
    """Examination probability per position, relative to position 1, fitted by EM on the
    click logs (position-based model, attractiveness per placement and item); see
    ``fit_position_bias`` for ``source``."""
    logs = click_logs(store_path, since_ms, experiment)
    return fit_position_bias(logs, source, max_position)[0]


def click_training_frame(
    store_path: Path, bias: PositionBias | None = None, since_ms: int | None = None
) -> pd.DataFrame:
    """Click logs with an inverse-propensity ``weight`` per row, for training a ranker on
    clicks without learning the position bias back (Joachims et al. 2017)."""
    logs = click_logs(store_path, since_ms)
    bias = bias or fit_position_bias(logs)[0]
    weights = training_weights(logs["position"], logs["clicked"], bias.examination)
    return logs.assign(weight=weights)


def position_bias_of(
    store_path: Path, logs: pd.DataFrame
) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """The shop's position bias from every shuffled list when there are any (unconfounded),
    else from this experiment's own ``logs`` (see ``fit_position_bias``)."""
    try:
        bias, source = fit_position_bias(click_logs(store_path, shuffled=True), "shuffled")
    except (DataError, ValueError):
        try:
            bias, source = fit_position_bias(logs, "all")
        except (DataError, ValueError):
            return None, None
    found = {
        "examination": [float(v) for v in bias.examination],
        "source": source,
        "iterations": bias.iterations,
        "converged": bias.converged,
    }
    return found, bias.examination


def debiased_ctr(logs: pd.DataFrame, theta: np.ndarray | None) -> pd.DataFrame:
    """Item CTR per variant as logged and with clicks weighted by 1/θ(position)."""
    if theta is None or logs.empty:
        return pd.DataFrame()
    rows = []
    for variant, group in logs.groupby("variant"):
        rows.append(
            {
                "variant": variant,
                "item_impressions": len(group),
                "item_ctr": float(group["clicked"].mean()),
                "item_ctr_debiased": ips_ctr(group["clicked"], group["position"], theta),
            }
        )
    return pd.DataFrame(rows)
