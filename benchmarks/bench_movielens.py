"""MovieLens 100k under the Microsoft Recommenders protocol: nextbuy's models against references.

Every rating is a positive interaction; a stratified random 75/25 split with seed 42 (per item,
and per user as Microsoft's own tables use); top-10 with training items excluded; every test
interaction relevant; binary NDCG with a log2 discount; MAP divided by the number of relevant
items. Hyper-parameters are tuned with Optuna on a validation split carved from the TRAIN part
only (a second stratified 75/25 split of it, seed 43); the test part is used once, at the end.

Usage: python benchmarks/bench_movielens.py [--trials 12] [--runs 3] [--no-write] [--report DIR]
Writes the "movielens" section of BENCHMARKS.md.
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
from nextbuy.datasets import load_movielens_100k
from nextbuy.evaluation.report import print_table, write_report
from nextbuy.evaluation.runner import EvaluationResult, evaluate_models, prepare
from nextbuy.evaluation.splits import Split, stratified_split
from nextbuy.evaluation.tuning import TuningResult, tune
from nextbuy.models import EASE, ALSModel, ItemKNN, Recommender, create_model

TARGET_NDCG = 0.50
SEED, VALIDATION_SEED = 42, 43
VALIDATION_FRACTION = 0.2  # of the training part
CPU = {"use_gpu": False}  # the numbers and timings are for the CPU
PUBLISHED = "BiVAE NDCG@10 0.475, precision@10 0.412 (Microsoft Recommenders, per-user split)"
# EASE with the catalogue as side information: λ and the side weight γ
SIDE_SPACE = {"reg": ("float", 100.0, 3000.0, "log"), "side_weight": ("float", 0.5, 8.0, "log")}
REFERENCES = ("ease λ=500", "als 16f α=1", "itemknn bm25", "popularity")
console = Console(width=140)
WHY_NOT_TARGET = """\
**Why not 0.50.** The tuned blend beats every reference, by 0.002 (per item) and 0.011 (per
user), and the 0.50 target is not reached honestly. What was tried while building this
(exploration on the per-item split, scored on its test part, so these are optimistic upper
bounds and not results):
EASE λ 200/300/500/800 gives 0.472/0.478/0.481/0.478 (flat at the top); EASE with
dropout-emphasis regularisation (EDLAE-style, λ + p/(1-p)·diag(XᵀX)) at best 0.483;
EASE divided by popularity^0.1 0.483; RP3beta at best 0.438; user-kNN 0.443; GF-CF graph
filter 0.464; an item-item model of ratings made close in time 0.448 alone, 0.485 blended
with EASE; the best blend of EASE, ALS, item-kNN and user-kNN with weights picked on the
test part itself 0.489; a LightGBM LambdaRank stacker over EASE/ALS/kNN/BPR scores trained on
a validation split 0.453 (the scores' distributions shift between the smaller validation
fit and the full fit). Linear item-item models, factorisations and their blends all top
out near 0.49 on this protocol: 0.50 needs a different source of signal, not more tuning.
The references also had an edge ours did not: their parameters were picked on this very
test split, while every 'tuned' row here was picked on validation only (which is smaller,
so its NDCG is lower, and ALS's choice transfers worst: validation favours 32 factors,
test 16).

**A different source of signal, tried since.**
`python benchmarks/explore_movielens_side_information.py` (needs the `deep` extra; ~4 min;
every hyper-parameter and the blend weight picked on the validation split, the test part
read once): EASE whose Gram matrix also sees the movies' genres and release-year buckets as
pseudo-users (and, on the per-item split where validation picked them, the users' age,
gender and occupation as extra input columns), "collective EASE", reaches 0.4902 per item /
0.4861 per user; its z-score blend with a small Mult-VAE (torch, 200 epochs, ~35 s) 0.4940 /
0.4938. That is the closest to 0.50 found, and still short of it; the model family was
chosen while exploring on the test part, so it is a measured direction, not an engine model
yet. No gain over EASE (upper bounds read on the test part): popularity local in time
(+0.001 at most); release dates against the user's active period (0.2% of test pairs are
films released after the user's last training rating); rating values as extra inputs;
popularity scaled by the user's activity (+0.0015); a user-side EASE. Half the ratings were
given in batches within the same second; every temporal signal derived from them duplicated
popularity or what EASE already sees.

**In the engine since:** EASE takes the catalogue as side information (`side_weight` γ:
every attribute value two or more items share, here the genres and the release date, acts as
a pseudo-user, γ²·AAᵀ added to XᵀX). Tuned on validation it gives 0.4851 per user, and the
blend built on it 0.4907, the best so far; per item validation picked λ=1590, γ=2.6, which
transfers badly (0.4759; λ=500, γ=3 reads 0.4862 on the test part, an upper bound). It has
no demographics: the engine's models see items, not user attributes."""


@dataclass
class SplitOutcome:
    by: str
    result: EvaluationResult
    tuned: dict[str, TuningResult]
    timings: pd.DataFrame  # model, fit_median_s, recommend_median_s
    tuning_seconds: float


def tune_all(split: Split, trials: int, items: pd.DataFrame) -> dict[str, TuningResult]:
    """EASE (plain and with the movies' genres and release dates as side information), ALS,
    BPR and item-kNN on validation, then the weights of a blend of side-information EASE,
    ALS, item-kNN and popularity."""
    common: dict[str, Any] = {"protocol": "standard", "metric": "ndcg@10", "seed": 0}
    tuned = {
        "ease": tune("ease", split, n_trials=trials, **common),
        "ease side": tune(
            "ease", split, n_trials=trials, search_space=SIDE_SPACE, items=items, **common
        ),
        "als": tune("als", split, n_trials=trials, fixed_params=CPU, **common),
        "itemknn": tune("itemknn", split, n_trials=trials, **common),
        "bpr": tune("bpr", split, n_trials=trials, fixed_params=CPU, **common),
    }
    members = [
        {"model": model, "params": tuned[name].best_params}
        for name, model in (("ease side", "ease"), ("als", "als"), ("itemknn", "itemknn"))
    ]
    members.append({"model": "popularity", "params": {}})
    # the normalisation is fixed so that the trials go to the weights alone
    blend_params = {"members": members, "normalise": "zscore"}
    tuned["blend"] = tune(
        "blend", split, n_trials=2 * trials, fixed_params=blend_params, items=items, **common
    )
    return tuned


def contenders(tuned: dict[str, TuningResult]) -> dict[str, Recommender]:
    """The references measured before, and nextbuy's tuned models."""
    return {
        "ease λ=500": EASE(reg=500.0),
        "als 16f α=1": ALSModel(factors=16, alpha=1.0, **CPU),
        "itemknn bm25": ItemKNN(),
        "ease tuned": tuned["ease"].model(),
        "ease side tuned": tuned["ease side"].model(),
        "als tuned": tuned["als"].model(),
        "itemknn tuned": tuned["itemknn"].model(),
        "bpr tuned": tuned["bpr"].model(),
        "blend tuned": tuned["blend"].model(),
    }


def time_models(
    split: Split, models: dict[str, Recommender], runs: int, items: pd.DataFrame
) -> pd.DataFrame:
    """Median fit and recommend-for-every-user (top 10, training items excluded) seconds."""
    setup = prepare(split.train, split.test, "standard")
    every_user = setup.data.matrix
    rows = []
    for name, model in models.items():
        spec = (model.name, model.params())
        fit_s = median_seconds(
            lambda s=spec: create_model(s[0], **s[1]).fit(setup.data, items), runs
        )
        fitted = create_model(*spec[:1], **spec[1]).fit(setup.data, items)
        rec_s = median_seconds(lambda f=fitted: f.recommend(every_user, 10, every_user), runs)
        rows.append({"model": name, "fit_median_s": fit_s, "recommend_median_s": rec_s})
    return pd.DataFrame(rows)


def run_split(
    df: pd.DataFrame, items: pd.DataFrame, by: str, trials: int, runs: int
) -> SplitOutcome:
    outer = stratified_split(df, test_fraction=0.25, by=by, seed=SEED)  # type: ignore[arg-type]
    inner = stratified_split(
        outer.train,
        VALIDATION_FRACTION,
        by=by,
        seed=VALIDATION_SEED,  # type: ignore[arg-type]
    )
    start = time.perf_counter()
    tuned = tune_all(without_test(inner.train, inner.test, "stratified"), trials, items)
    tuning_seconds = time.perf_counter() - start
    models = contenders(tuned)
    result = evaluate_models(outer, models, protocol="standard", items=items)
    timed = {k: v for k, v in models.items() if k != "random"}
    timings = time_models(outer, timed, runs, items)
    return SplitOutcome(by, result, tuned, timings, tuning_seconds)


def summary_table(outcome: SplitOutcome) -> pd.DataFrame:
    table = outcome.result.table.merge(outcome.timings, on="model", how="left")
    table = table.sort_values("ndcg@10", ascending=False)
    return pd.DataFrame(
        {
            "model": table["model"],
            "NDCG@10": table["ndcg@10"],
            "precision@10": table["precision@10"],
            "recall@10": table["recall@10"],
            "MAP@10": table["map@10"],
            "coverage@10": table["coverage"],
            "fit s (median)": table["fit_median_s"],
            "recommend-all s (median)": table["recommend_median_s"],
        }
    )


def best_ndcg(outcome: SplitOutcome) -> float:
    ndcg = outcome.result.table.set_index("model")["ndcg@10"]
    return float(ndcg[[m for m in ndcg.index if m.endswith("tuned")]].max())


def verdict(outcome: SplitOutcome) -> str:
    ndcg = outcome.result.table.set_index("model")["ndcg@10"]
    ours = ndcg[[m for m in ndcg.index if m.endswith("tuned")]]
    best_name, best = str(ours.idxmax()), float(ours.max())
    strongest_ref = max(REFERENCES, key=lambda r: ndcg[r])
    beats = all(best > ndcg[r] for r in REFERENCES)
    line = (
        f"Best nextbuy model: **{best_name}**, NDCG@10 {best:.4f}; strongest reference "
        f"{strongest_ref} {ndcg[strongest_ref]:.4f} → "
        f"{'beats every reference' if beats else 'does NOT beat every reference'} in this run; "
        f"target {TARGET_NDCG:.2f} {'reached' if best >= TARGET_NDCG else 'NOT reached'}."
    )
    return line


def params_text(tuned: dict[str, TuningResult]) -> str:
    lines = []
    for name, result in tuned.items():
        params = dict(result.best_params)
        if name == "blend":
            shown = {"weights": [round(w, 3) for w in params["weights"]]}
            shown["normalise"] = params.get("normalise", "zscore")
            params = shown
        params.pop("use_gpu", None)
        shown_params = {k: round(v, 4) if isinstance(v, float) else v for k, v in params.items()}
        lines.append(
            f"- {name}: validation NDCG@10 {result.best_value:.4f} "
            f"(defaults {result.default_value:.4f}, {len(result.trials)} trials): `{shown_params}`"
        )
    return "\n".join(lines)


def section(outcomes: list[SplitOutcome], trials: int, runs: int, total_s: float) -> str:
    parts = [
        "Command: `python benchmarks/bench_movielens.py"
        f"{'' if trials == 16 else f' --trials {trials}'}{'' if runs == 3 else f' --runs {runs}'}`"
        f" ({total_s / 60:.1f} min in all, tuning included).",
        "",
        "Protocol (Microsoft Recommenders): MovieLens 100k, every rating a positive interaction; "
        f"stratified random 75/25 split, seed {SEED}; top-10 with training items excluded; every "
        "test interaction relevant; binary NDCG (log2); MAP over all relevant items. "
        "Hyper-parameters tuned with Optuna TPE (seed 0) on a validation split carved from the "
        f"training part only (stratified, {VALIDATION_FRACTION:.0%} of it, seed "
        f"{VALIDATION_SEED}); the test part was read once. Models without 'tuned' use fixed "
        f"parameters measured earlier, as references. Published best: {PUBLISHED}.",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared with other work while measured); "
        f"{model_versions()}. Threads: BLAS limited to 1 ({blas_threads()}); implicit "
        "(ALS, item-kNN) uses all cores. Times are medians of "
        f"{runs} runs on the full training part (943 users, recommend = top 10 for every user).",
    ]
    for outcome in outcomes:
        parts += [
            "",
            f"### Split stratified per {outcome.by}",
            "",
            markdown_table(
                summary_table(outcome), {"fit s (median)": ".2f", "recommend-all s (median)": ".3f"}
            ),
            "",
            verdict(outcome),
            "",
            f"Tuned on validation ({outcome.tuning_seconds:.0f} s):",
            params_text(outcome.tuned),
        ]
    if any(best_ndcg(o) < TARGET_NDCG for o in outcomes):
        parts += ["", WHY_NOT_TARGET]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="Optuna trials per model")
    parser.add_argument("--runs", type=int, default=3, help="timing runs (median)")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--report", type=Path, help="also write HTML reports to this folder")
    args = parser.parse_args()
    # one BLAS thread: on 2 shared cores a second one slowed the EASE inverse several-fold
    threadpool_limits(1, "blas")
    data = load_movielens_100k()
    start = time.perf_counter()
    outcomes = []
    for by in ("item", "user"):
        outcome = run_split(data.interactions, data.items, by, args.trials, args.runs)
        print_table(outcome.result, console)
        console.print(markdown_table(summary_table(outcome)))
        console.print(verdict(outcome))
        if args.report:
            write_report(
                outcome.result,
                args.report / f"movielens_{by}.html",
                title=f"MovieLens 100k, split stratified per {by}",
            )
        outcomes.append(outcome)
    text = section(outcomes, args.trials, args.runs, time.perf_counter() - start)
    if not args.no_write:
        write_section("movielens", "MovieLens 100k (Microsoft Recommenders protocol)", text)
    console.print(text)


if __name__ == "__main__":
    main()
