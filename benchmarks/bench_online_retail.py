"""UCI Online Retail: every model, tuned on a validation window, against random and popularity.

Purchases only (cancellations are not in the matrix nor in the truth). One global temporal
split: the last 20% of purchase lines are test; the 10% before them are the validation window
models are tuned on (fitted on the 70% before it); the final models are fitted on those 80%
and scored once on the test period. Two protocols: discovery (items a customer already
bought are neither recommended nor counted) and repeat-aware (nothing excluded; the
customer's own purchase history is a baseline). Customers new in the test period are
evaluated with what a model gives an empty history (best sellers), not dropped.

Usage: python benchmarks/bench_online_retail.py [--trials 8] [--runs 3] [--no-write] [--report DIR]
Writes the "online-retail" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    blas_threads,
    cpu_model,
    markdown_table,
    median_seconds,
    model_versions,
    without_test,
    write_section,
)
from nextbuy.datasets import load_online_retail
from nextbuy.evaluation.report import print_table, write_report
from nextbuy.evaluation.runner import EvaluationResult, evaluate_models, prepare
from nextbuy.evaluation.splits import Split, temporal_split
from nextbuy.evaluation.tuning import TuningResult, tune
from nextbuy.models import EASE, ALSModel, ItemKNN, Recommender, create_model

TEST_FRACTION, VALIDATION_FRACTION = 0.2, 0.1
WEIGHTS = {"purchase": 1.0}
CPU = {"use_gpu": False}  # the numbers and timings are for the CPU
EARLIER = "EASE λ=1000 0.102, implicit ALS 0.101, item-kNN BM25 0.090, popularity 0.038"
PERSONAL = ("ease", "als", "itemknn")
console = Console(width=140)


@dataclass
class ProtocolOutcome:
    protocol: str
    result: EvaluationResult
    tuned: dict[str, TuningResult]
    timings: pd.DataFrame


def purchases() -> pd.DataFrame:
    data = load_online_retail()
    frame = data.interactions
    frame = frame[frame["event_type"] == "purchase"].reset_index(drop=True)
    # no invoice number in the export: a customer's lines of one moment are one order (fbt)
    frame["session_id"] = frame["user_id"].astype(str) + "@" + frame["timestamp"].astype(str)
    return frame


def once_per_pair(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, product): under discovery, how often is not what is learnt."""
    return frame.drop_duplicates(["user_id", "item_id"], keep="last")


def splits(frame: pd.DataFrame, binary: bool) -> tuple[Split, Split]:
    """(tuning split: train → validation, final split: train + validation → test)."""
    cut = temporal_split(frame, TEST_FRACTION, validation_fraction=VALIDATION_FRACTION)
    train = once_per_pair(cut.train) if binary else cut.train
    before_test = pd.concat([cut.train, cut.validation])
    final = Split(
        train=once_per_pair(before_test) if binary else before_test,
        validation=cut.validation.iloc[:0],
        test=cut.test,
        protocol="temporal",
        validation_cut=None,
        test_cut=cut.test_cut,
        params={"test_fraction": TEST_FRACTION, "validation_cut": str(cut.validation_cut)},
    )
    return without_test(train, cut.validation, "temporal"), final


def tune_singles(split: Split, trials: int) -> dict[str, TuningResult]:
    common: dict[str, Any] = {"protocol": "discovery", "weights": WEIGHTS, "seed": 0}
    return {
        "ease": tune("ease", split, n_trials=trials, **common),
        "als": tune("als", split, n_trials=trials, fixed_params=CPU, **common),
        "itemknn": tune("itemknn", split, n_trials=trials, **common),
        "trending": tune("trending", split, n_trials=trials, **common),
        "bpr": tune("bpr", split, n_trials=trials, fixed_params=CPU, **common),
        "fbt": tune("fbt", split, n_trials=trials, **common),
    }


def tune_blend(
    split: Split, singles: dict[str, TuningResult], protocol: str, trials: int
) -> TuningResult:
    """Blend weights on validation; under repeat-aware the customer's history leads the blend."""
    members = [{"model": n, "params": singles[n].best_params} for n in (*PERSONAL, "trending")]
    if protocol == "repeat":
        # the first member's weight is fixed at 1: the others are tuned relative to it
        members.insert(0, {"model": "own_history", "params": {}})
    fixed = {"members": members, "normalise": "zscore"}
    return tune(
        "blend", split, n_trials=trials, protocol=protocol, weights=WEIGHTS, seed=0,
        fixed_params=fixed,
    )  # fmt: skip


def contenders(tuned: dict[str, TuningResult]) -> dict[str, Recommender]:
    models: dict[str, Recommender] = {
        "ease λ=1000": EASE(reg=1000.0),
        "als defaults": ALSModel(**CPU),
        "itemknn bm25": ItemKNN(),
    }
    models.update({f"{name} tuned": result.model() for name, result in tuned.items()})
    return models


def time_models(split: Split, models: dict[str, Recommender], runs: int) -> pd.DataFrame:
    """Median fit and recommend-for-every-customer (top 10) seconds on the final training data."""
    setup = prepare(split.train, split.test, "discovery", weights=WEIGHTS)
    every_user = setup.data.matrix
    rows = []
    for name, model in models.items():
        spec = (model.name, model.params())
        fit_s = median_seconds(lambda s=spec: create_model(s[0], **s[1]).fit(setup.data), runs)
        fitted = create_model(spec[0], **spec[1]).fit(setup.data)
        rec_s = median_seconds(lambda f=fitted: f.recommend(every_user, 10, every_user), runs)
        rows.append({"model": name, "fit_median_s": fit_s, "recommend_median_s": rec_s})
    return pd.DataFrame(rows)


def known_user_ndcg(result: EvaluationResult) -> pd.Series:
    """NDCG@10 over customers seen in training (the segments light, medium and heavy)."""
    seg = result.by_segment
    seg = seg[
        (seg["dimension"] == "user_activity") & seg["segment"].isin(["light", "medium", "heavy"])
    ]
    weighted = seg.assign(w=seg["ndcg@10"] * seg["users"]).groupby("model")[["w", "users"]].sum()
    return weighted["w"] / weighted["users"]


def new_user_ndcg(result: EvaluationResult) -> pd.Series:
    seg = result.by_segment
    new = seg[(seg["dimension"] == "user_activity") & (seg["segment"] == "new")]
    return new.set_index("model")["ndcg@10"]


def summary_table(outcome: ProtocolOutcome) -> pd.DataFrame:
    table = outcome.result.table.merge(outcome.timings, on="model", how="left")
    table = table.sort_values("ndcg@10", ascending=False)
    known, new = known_user_ndcg(outcome.result), new_user_ndcg(outcome.result)
    return pd.DataFrame(
        {
            "model": table["model"],
            "NDCG@10": table["ndcg@10"],
            "NDCG@10 known": table["model"].map(known),
            "NDCG@10 new": table["model"].map(new),
            "recall@10": table["recall@10"],
            "precision@10": table["precision@10"],
            "hit@10": table["hit_rate@10"],
            "coverage@10": table["coverage"],
            "pop. bias": table["popularity_bias"],
            "fit s": table["fit_median_s"],
            "recommend-all s": table["recommend_median_s"],
        }
    )


def run_protocols(trials: int, runs: int) -> tuple[list[ProtocolOutcome], dict[str, Any], float]:
    frame = purchases()
    start = time.perf_counter()
    tuning_split, final = splits(frame, binary=True)
    singles = tune_singles(tuning_split, trials)
    discovery_tuned = {
        **singles,
        "blend": tune_blend(tuning_split, singles, "discovery", 2 * trials),
    }
    outcomes = []
    models = contenders(discovery_tuned)
    result = evaluate_models(final, models, protocol="discovery", weights=WEIGHTS)
    outcomes.append(
        ProtocolOutcome("discovery", result, discovery_tuned, time_models(final, models, runs))
    )
    # repeat-aware: how often a customer bought an item matters, so the matrix keeps counts;
    # the single models keep their discovery parameters, the blend adds the customer's history
    repeat_tuning, repeat_final = splits(frame, binary=False)
    repeat_blend = tune_blend(repeat_tuning, singles, "repeat", 2 * trials)
    repeat_tuned = {**singles, "blend": repeat_blend}
    models = contenders(repeat_tuned)
    result = evaluate_models(repeat_final, models, protocol="repeat", weights=WEIGHTS)
    # the single models are the same as under discovery: only the blend is timed again
    timed = time_models(repeat_final, {"blend tuned": models["blend tuned"]}, runs)
    outcomes.append(ProtocolOutcome("repeat", result, repeat_tuned, timed))
    return outcomes, outcomes[0].result.split_summary, time.perf_counter() - start


def params_text(tuned: dict[str, TuningResult]) -> str:
    lines = []
    for name, result in tuned.items():
        params = dict(result.best_params)
        if name == "blend":
            members = [m["model"] for m in params["members"]]
            params = {"members": members, "weights": [round(w, 3) for w in params["weights"]]}
        params.pop("use_gpu", None)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in params.items()}
        lines.append(
            f"- {name}: validation NDCG@10 {result.best_value:.4f} "
            f"(defaults {result.default_value:.4f}, {len(result.trials)} trials): `{shown}`"
        )
    return "\n".join(lines)


def split_text(summary: dict[str, Any]) -> str:
    return (
        f"Split: train {summary['train_start'][:10]} → {summary['train_end'][:10]} "
        f"({summary['train_rows']:,} distinct customer-product pairs of purchase lines, "
        f"{summary['train_users']:,} customers, {summary['train_items']:,} products); test "
        f"{summary['test_start'][:10]} → {summary['test_end'][:10]} ({summary['test_rows']:,} "
        f"purchase lines, {summary['test_users']:,} customers, of whom "
        f"{summary['new_users']:,} new; {summary['new_items']:,} new products in "
        f"{summary['new_item_rows']:,} lines, unreachable by any model but kept in the truth)."
    )


def section(
    outcomes: list[ProtocolOutcome], summary: dict[str, Any], args: Any, total: float
) -> str:
    flags = "" if args.trials == 8 else f" --trials {args.trials}"
    flags += "" if args.runs == 3 else f" --runs {args.runs}"
    parts = [
        f"Command: `python benchmarks/bench_online_retail.py{flags}` ({total / 60:.1f} min in all, "
        "tuning included).",
        "",
        "Purchases only, cancellations excluded; one global temporal split (last 20% of purchase "
        "lines = test; the 10% before = validation window for tuning with Optuna TPE, seed 0; "
        "final models fitted on everything before the test cut). Under discovery the matrix "
        "holds each customer-product pair once; under repeat-aware it counts purchase lines. "
        "NDCG@10 is over every test customer with a relevant purchase (new customers get "
        "best sellers); 'known' is over customers seen in training, the basis of the numbers "
        f"measured earlier (discovery: {EARLIER}).",
        "",
        split_text(summary),
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared with other work while measured); "
        f"{model_versions()}. Threads: BLAS limited to 1 ({blas_threads()}); implicit uses all "
        f"cores. Times are medians of {args.runs} runs on the final training data, recommend = "
        "top 10 for every training customer.",
    ]
    for outcome in outcomes:
        title = "discovery" if outcome.protocol == "discovery" else "repeat-aware"
        formats = {"fit s": ".2f", "recommend-all s": ".3f", "pop. bias": ".3f"}
        parts += [
            "",
            f"### Protocol: {title}",
            "",
            markdown_table(summary_table(outcome), formats),
            "",
            "" if outcome.protocol == "discovery" else "Times of the single models: see discovery.",
            "Tuned on the validation window:",
            params_text(
                outcome.tuned
                if outcome.protocol == "discovery"
                else {"blend": outcome.tuned["blend"]}
            ),
        ]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials per model")
    parser.add_argument("--runs", type=int, default=3, help="timing runs (median)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--report", type=Path, help="also write HTML reports to this folder")
    args = parser.parse_args()
    # one BLAS thread: on 2 shared cores a second one slowed the EASE inverse several-fold
    threadpool_limits(1, "blas")
    outcomes, summary, total = run_protocols(args.trials, args.runs)
    for outcome in outcomes:
        print_table(outcome.result, console)
        if args.report:
            write_report(
                outcome.result,
                args.report / f"online_retail_{outcome.protocol}.html",
                title=f"Online Retail, {outcome.protocol} protocol",
            )
    text = section(outcomes, summary, args, total)
    if not args.no_write:
        write_section("online-retail", "UCI Online Retail (temporal split)", text)
    console.print(text)


if __name__ == "__main__":
    main()
