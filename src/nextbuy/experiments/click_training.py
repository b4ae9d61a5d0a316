"""A ranker trained on logged lists and their clicks, with the position bias taken out.

A click needs the item to be looked at as well as liked, and a lower slot is looked at less
(the position-based model in ``position_bias``). A ranker trained on raw clicks therefore
learns whatever put items on top in the logging policy, relevant or not. Each clicked row is
weighted by the inverse of its position's estimated examination probability, 1/θ_k
(inverse propensity scoring; Joachims, Swaminathan & Schnabel 2017, "Unbiased
Learning-to-Rank with Biased Feedback", WSDM), so that in expectation a click counts as much
as the item's relevance, wherever it was shown.

The default objective is pointwise (binary log-loss with IPS sample weights), chosen by
measurement (``benchmarks/bench_click_ranker.py``: NDCG@10 against the planted relevance
0.995 against 0.990 for lambdarank with the same weights, naive rankers 0.957-0.965).
LightGBM scales each row's gradient by its weight: for a pointwise loss that makes an
item's expected weighted clicks equal its relevance wherever it was shown (rows without a
click keep weight 1: the PBM gives them no unbiased weight that is not negative), whereas
under lambdarank it multiplies a row's sum of pairwise lambdas and the unclicked partner of
each pair keeps weight 1, which is not the pairwise IPS estimator. LightGBM's own unbiased
LambdaMART (``Dataset(position=...)``) does as well on that log but fits its position
factors itself instead of using the estimate from randomised lists, and leaves a tenth of
its gain on the feature the logging policy ranked by.

One group per served list; features per (list, item) come from the items and from what the
caller supplies per list (e.g. a user-item score), never the position itself, which is not
known when a new list is ranked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.errors import DataError
from nextbuy.experiments.click_reports import click_logs, fit_position_bias
from nextbuy.experiments.position_bias import (
    DEFAULT_MAX_WEIGHT,
    PositionBias,
    training_weights,
)
from nextbuy.hybrid.ranker import Ranker, RankerFit

LIST_KEY = "recommendation_id"
ITEM_KEY = "item_id"

# Small trees and an early stop: click logs are noisy and the feature sets here are few.
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "n_estimators": 300,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 100,
}


@dataclass(frozen=True)
class ClickExamples:
    """Ranker examples from a click log: rows grouped by served list, in position order."""

    keys: pd.DataFrame  # recommendation_id, item_id per row
    features: pd.DataFrame
    labels: np.ndarray  # 1 when the shown item was clicked
    groups: np.ndarray  # list sizes, in row order
    positions: np.ndarray  # 1-based slot the item was shown at
    weights: np.ndarray  # inverse-propensity weight per row (1 on rows without a click)
    bias: PositionBias


def click_examples(
    logs: pd.DataFrame,
    bias: PositionBias,
    item_features: pd.DataFrame | None = None,
    list_features: pd.DataFrame | None = None,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> ClickExamples:
    """Turn a click log (``click_reports.click_logs``: recommendation_id, item_id, position,
    clicked) into ranker examples weighted by ``bias``.

    ``item_features`` is indexed by item id; ``list_features`` has recommendation_id,
    item_id and one column per feature of that item in that list. Rows of items that a
    feature table lacks get NaN, which LightGBM routes as missing."""
    if item_features is None and list_features is None:
        raise DataError("no features: pass item_features, list_features or both")
    rows = logs.sort_values([LIST_KEY, "position"], kind="stable").reset_index(drop=True)
    keys = rows[[LIST_KEY, ITEM_KEY]]
    features = _features(keys, item_features, list_features)
    positions = rows["position"].to_numpy(np.int64)
    labels = rows["clicked"].to_numpy().astype(np.int64)
    return ClickExamples(
        keys=keys,
        features=features,
        labels=labels,
        groups=_group_sizes(rows[LIST_KEY]),
        positions=positions,
        weights=training_weights(positions, labels, bias.examination, max_weight),
        bias=bias,
    )


def _features(
    keys: pd.DataFrame, item_features: pd.DataFrame | None, list_features: pd.DataFrame | None
) -> pd.DataFrame:
    parts = []
    if item_features is not None:
        parts.append(item_features.reindex(keys[ITEM_KEY].to_numpy()).reset_index(drop=True))
    if list_features is not None:
        # A left merge on the keys keeps the row order of `keys`.
        merged = keys.merge(list_features, on=[LIST_KEY, ITEM_KEY], how="left")
        parts.append(merged.drop(columns=[LIST_KEY, ITEM_KEY]))
    return pd.concat(parts, axis=1)


def _group_sizes(list_ids: pd.Series) -> np.ndarray:
    """Sizes of the runs of equal ids (rows are sorted by list)."""
    ids = list_ids.to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return np.diff(np.r_[starts, len(ids)])


def train_click_ranker(
    examples: ClickExamples,
    debias: bool = True,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    n_jobs: int = 2,
) -> tuple[Ranker, RankerFit]:
    """A ranker on logged clicks, each click weighted by 1/θ of its position (``debias``);
    without it, the naive ranker that learns the logging policy's position bias back."""
    ranker = Ranker({**DEFAULT_PARAMS, **(params or {})}, seed=seed, n_jobs=n_jobs)
    weights = examples.weights if debias else None
    report = ranker.fit(examples.features, examples.labels, examples.groups, weights)
    return ranker, report


def click_ranker_from_store(
    store_path: Path,
    item_features: pd.DataFrame | None = None,
    list_features: pd.DataFrame | None = None,
    since_ms: int | None = None,
    debias: bool = True,
    params: dict[str, Any] | None = None,
    n_jobs: int = 2,
) -> tuple[Ranker, ClickExamples]:
    """Train on the store's exposure log and clicks; θ is estimated from the same logs,
    from the lists served in random order when there are any (``fit_position_bias``)."""
    logs = click_logs(store_path, since_ms)
    bias, _ = fit_position_bias(logs)
    examples = click_examples(logs, bias, item_features, list_features)
    ranker, _ = train_click_ranker(examples, debias, params, n_jobs=n_jobs)
    return ranker, examples


# -- a log with a planted truth (tests and benchmarks) ----------------------------------------


@dataclass(frozen=True)
class PlantedLog:
    """Logged lists whose true relevance is known, and the features a ranker sees."""

    logs: pd.DataFrame  # click_logs columns
    item_features: pd.DataFrame
    list_features: pd.DataFrame
    relevance: pd.Series  # P(click | examined), indexed by (recommendation_id, item_id)
    theta: np.ndarray


def _relevance(quality: np.ndarray, match: np.ndarray) -> np.ndarray:
    return 0.6 / (1.0 + np.exp(-(1.5 * quality + 1.5 * match - 1.5)))


def planted_log(
    lists: int = 20_000,
    items: int = 500,
    k: int = 10,
    explore_share: float = 0.1,
    promotion: float = 2.0,
    theta: np.ndarray | None = None,
    seed: int = 0,
) -> PlantedLog:
    """Lists of ``k`` random items; relevance grows with the item's ``quality`` and the
    list's ``match`` score, while the logging policy ranks mostly by ``promoted`` (a flag
    unrelated to relevance, weighted by ``promotion``). A share ``explore_share`` of the lists
    is served in random order, which is what makes θ identifiable. Clicks follow the PBM:
    P(click) = θ_k · relevance."""
    rng = np.random.default_rng(seed)
    theta = 1.0 / np.arange(1, k + 1) if theta is None else np.asarray(theta, np.float64)
    item_frame = pd.DataFrame(
        {"quality": rng.normal(size=items), "promoted": (rng.random(items) < 0.3).astype(float)},
        index=pd.Index(np.arange(items), name=ITEM_KEY),
    )
    shown = np.stack([rng.choice(items, k, replace=False) for _ in range(lists)])
    match = rng.normal(size=shown.shape)
    quality = item_frame["quality"].to_numpy()[shown]
    rel = _relevance(quality, match)
    policy = promotion * item_frame["promoted"].to_numpy()[shown] + 0.5 * match
    policy += rng.normal(scale=0.5, size=shown.shape)
    explore = rng.random(lists) < explore_share
    policy[explore] = rng.random((int(explore.sum()), k))
    order = np.argsort(-policy, axis=1)
    ranked = [np.take_along_axis(a, order, axis=1) for a in (shown, match, rel)]
    positions = np.broadcast_to(np.arange(1, k + 1), shown.shape)
    clicked = rng.random(shown.shape) < theta[positions - 1] * ranked[2]
    list_ids = np.repeat(np.arange(lists), k)
    logs = pd.DataFrame({
        LIST_KEY: list_ids, "placement": "home", "shuffled": np.repeat(explore, k).astype(int),
        ITEM_KEY: ranked[0].ravel(), "position": positions.ravel(), "clicked": clicked.ravel(),
    })  # fmt: skip
    pair = logs[[LIST_KEY, ITEM_KEY]].assign(match=ranked[1].ravel())
    truth = pd.Series(ranked[2].ravel(), index=pd.MultiIndex.from_frame(pair[[LIST_KEY, ITEM_KEY]]))
    return PlantedLog(logs, item_frame, pair, truth, theta)


def ndcg(scores: np.ndarray, gains: np.ndarray, groups: np.ndarray, at: int = 10) -> float:
    """Mean NDCG@at of ``scores`` against graded ``gains``, per group of rows."""
    out, start = [], 0
    for size in groups:
        s, g = scores[start : start + size], gains[start : start + size]
        start += size
        discount = 1.0 / np.log2(np.arange(2, min(at, size) + 2))
        ideal = (np.sort(g)[::-1][:at] * discount).sum()
        if ideal > 0:
            out.append((g[np.argsort(-s, kind="stable")][:at] * discount).sum() / ideal)
    return float(np.mean(out)) if out else float("nan")
