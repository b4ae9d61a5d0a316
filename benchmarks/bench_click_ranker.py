"""A ranker trained on logged clicks, naive against position-debiased, on a planted log.

Logged lists of 10 items whose true relevance is known (``planted_log``): relevance grows
with the item's quality and a per-list match score, while the logging policy puts promoted
items (a flag unrelated to relevance) on top; 10% of the lists are served in random order,
from which θ is estimated by EM (``fit_position_bias``). Clicks follow the position-based
model with θ_k = 1/k. Each ranker is scored on fresh lists (new items, no clicks) by NDCG@10
of its order against the true relevance; "promoted share" is the share of the ranker's gain
importance that went to the promoted flag (0 for a ranker that learned no position bias).

Rows: the logging policy's own order; LightGBM binary and lambdarank objectives, naive and
with IPS weights from the estimated θ (and, for binary, from the true θ, to separate the
estimate's error from the method's); LightGBM's own unbiased LambdaMART
(``Dataset(position=...)``, which fits its position factors itself) for reference.

Usage: python benchmarks/bench_click_ranker.py [--lists 20000] [--seeds 3]
Writes the "click-ranker" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_summary, markdown_table, write_section
from nextbuy.experiments.click_reports import fit_position_bias
from nextbuy.experiments.click_training import (
    ITEM_KEY,
    LIST_KEY,
    ClickExamples,
    PlantedLog,
    click_examples,
    ndcg,
    planted_log,
    train_click_ranker,
)
from nextbuy.experiments.position_bias import training_weights
from nextbuy.hybrid.ranker import Ranker

N_JOBS = 1  # OpenMP threads spin badly on a shared two-core machine
COLUMNS = {
    "ndcg": "NDCG@10 vs true relevance",
    "ndcg_sd": "sd over seeds",
    "promoted": "promoted share",
    "seconds": "fit s",
}


def _truth(log: PlantedLog, examples: ClickExamples) -> np.ndarray:
    keys = pd.MultiIndex.from_frame(examples.keys[[LIST_KEY, ITEM_KEY]])
    return log.relevance.loc[keys].to_numpy()


def _promoted_share(ranker: Ranker) -> float:
    assert ranker.report is not None
    return ranker.report.importance.get("promoted", 0.0)


def _lightgbm_position(examples: ClickExamples, seed: int) -> lightgbm.Booster:
    data = lightgbm.Dataset(
        examples.features, examples.labels, group=examples.groups, position=examples.positions - 1
    )
    params = {
        "objective": "lambdarank",
        "learning_rate": 0.05,
        "num_leaves": 15,
        "min_data_in_leaf": 100,
        "seed": seed,
        "num_threads": N_JOBS,
        "verbosity": -1,
    }
    return lightgbm.train(params, data, num_boost_round=150)


def _with_theta(examples: ClickExamples, theta: np.ndarray) -> ClickExamples:
    """The same examples weighted by the planted θ instead of the estimate."""
    weights = training_weights(examples.positions, examples.labels, theta)
    return dataclasses.replace(examples, weights=weights)


def run_seed(lists: int, seed: int) -> tuple[list[dict], np.ndarray]:
    train = planted_log(lists=lists, seed=seed)
    test = planted_log(lists=3_000, seed=1_000 + seed, explore_share=0.0)
    bias, _ = fit_position_bias(train.logs)
    examples = click_examples(train.logs, bias, train.item_features, train.list_features)
    oracle = _with_theta(examples, train.theta)
    held = click_examples(test.logs, bias, test.item_features, test.list_features)
    truth = _truth(test, held)
    rows = [{"ranker": "logging policy", "ndcg": ndcg(-held.positions, truth, held.groups)}]

    def add(name: str, fit: Callable[[], Ranker]) -> None:
        started = time.perf_counter()
        ranker = fit()
        rows.append({
            "ranker": name,
            "ndcg": ndcg(ranker.predict(held.features), truth, held.groups),
            "promoted share": _promoted_share(ranker),
            "seconds": time.perf_counter() - started,
        })  # fmt: skip

    for objective in ("binary", "lambdarank"):
        params = {"objective": objective}
        add(f"{objective}, naive", lambda p=params: _fit(examples, False, p, seed))
        add(f"{objective}, IPS (estimated θ)", lambda p=params: _fit(examples, True, p, seed))
    add("binary, IPS (true θ)", lambda: _fit(oracle, True, {"objective": "binary"}, seed))
    started = time.perf_counter()
    booster = _lightgbm_position(examples, seed)
    gain = booster.feature_importance("gain")
    rows.append({
        "ranker": "lambdarank, LightGBM position factors",
        "ndcg": ndcg(booster.predict(held.features), truth, held.groups),
        "promoted share": float(gain[examples.features.columns.get_loc("promoted")] / gain.sum()),
        "seconds": time.perf_counter() - started,
    })  # fmt: skip
    return rows, bias.examination


def _fit(examples: ClickExamples, debias: bool, params: dict, seed: int) -> Ranker:
    return train_click_ranker(examples, debias, params, seed=seed, n_jobs=N_JOBS)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lists", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    frames, thetas = [], []
    for seed in range(args.seeds):
        rows, theta = run_seed(args.lists, seed)
        frames.append(pd.DataFrame(rows).assign(seed=seed))
        thetas.append(theta)
    found = pd.concat(frames)
    table = (
        found.groupby("ranker", sort=False)
        .agg(
            ndcg=("ndcg", "mean"),
            ndcg_sd=("ndcg", "std"),
            promoted=("promoted share", "mean"),
            seconds=("seconds", "mean"),
        )
        .reset_index()
        .rename(columns=COLUMNS)
    )
    theta = pd.DataFrame({
        "position": np.arange(1, 11), "true θ": 1.0 / np.arange(1, 11),
        "estimated θ (mean)": np.mean(thetas, axis=0),
    })  # fmt: skip
    body = "\n".join(
        [
            "A ranker trained on logged clicks, naive against debiased with the position-bias "
            "estimate (inverse-propensity weights of clicks), on a planted log: relevance is "
            "known, the logging policy puts promoted (no more relevant) items on top, clicks "
            "follow θ_k = 1/k, 10% of lists are shuffled. NDCG@10 of each ranker's order "
            "against the true relevance on fresh lists; 'promoted share' is the ranker's "
            "importance on the promoted flag. Command: `python benchmarks/bench_click_ranker.py`.",
            "",
            f"{args.lists:,} logged lists of 10 per seed, {args.seeds} seeds; test: 3,000 fresh "
            f"lists. {machine_summary()}; {time.perf_counter() - started:.0f} s in all.",
            "",
            markdown_table(table, {"fit s": ".1f", "promoted share": ".3f"}),
            "",
            markdown_table(theta, {"true θ": ".3f", "estimated θ (mean)": ".3f"}),
        ]
    )
    print(body)
    write_section("click-ranker", "Position bias in a ranker's training data", body)


if __name__ == "__main__":
    main()
