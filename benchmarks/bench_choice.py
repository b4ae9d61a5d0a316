"""The automatic choice through the command line, as a new shop would use it, scored outside it.

For each data set: split it (held-out test part), write the training part to files, and in a
fresh project run `nextbuy init`, `nextbuy import`, `nextbuy train` (no options: the choice
decides) and `nextbuy recommend` (the API's request path; with no placement named the lists
keep the model's own order, topped up with trending and best sellers as served); then score
the lists on the test part here, with the evaluation runner's truth, next to references
fitted on the same split in the same run.

- movielens: MovieLens 100k, per-item stratified 75/25 split, seed 42 (the Microsoft
  Recommenders protocol: training items excluded, every test rating relevant); reference
  plain EASE λ=500.
- online-retail: the hybrid benchmark's temporal split (last 20% of rows are test), both
  protocols: lists as served (repeat-aware) and with earlier purchases left out
  (`--new-only`, discovery); references the hybrid's figures in BENCHMARKS.md and the
  baselines fitted here.
- shapes: synthetic shops of other shapes (benchmarks/shops.py), temporal split, both
  protocols, against popularity, trending and own history fitted on the same split.

Usage: python benchmarks/bench_choice.py [--part movielens|online-retail|shapes|report|all]
Parts cache their rows in benchmarks/.work/choice/; `report` writes the "choice" section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_summary, markdown_table, write_section
from nextbuy.choice import Candidate, choose
from nextbuy.config import Settings
from nextbuy.data.schema import DEFAULT_EVENT_WEIGHTS
from nextbuy.datasets import (
    SyntheticShop,
    load_movielens_100k,
    load_online_retail,
    load_sample_shop,
)
from nextbuy.datasets.shapes import SHAPES, shaped_shop
from nextbuy.engine import Engine
from nextbuy.evaluation import metrics
from nextbuy.evaluation.runner import EvaluationSetup, fill_with_popular, prepare
from nextbuy.evaluation.splits import stratified_split, temporal_split
from nextbuy.models import EASE, OwnHistory, PopularityModel, Recommender, TrendingModel

WORK = Path(__file__).resolve().parent / ".work" / "choice"
K = 10
HYBRID_FIGURES = {"discovery": 0.1219, "repeat": 0.3075}  # BENCHMARKS.md, hybrid section
COMMAND = "python benchmarks/bench_choice.py --part all"


@dataclass
class CliRun:
    """What the command line chose and what it took."""

    chosen: str
    protocol: str
    validation_ndcg: float
    train_seconds: float
    train_peak_mib: float
    leaderboard: list[dict[str, Any]]
    verdict: str


# --------------------------------------------------------------------------- the CLI


def nextbuy(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "nextbuy.cli", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    if done.returncode != 0:
        raise SystemExit(f"nextbuy {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def timed_peak(project: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB, VmHWM polled) of one CLI command."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "nextbuy.cli", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _vm_hwm(process.pid))
        time.sleep(0.2)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"nextbuy {' '.join(args)} failed:\n{err[-3000:]}")
    (project / "train.log").write_text(out)
    return time.perf_counter() - started, peak


def _vm_hwm(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cli_project(
    name: str,
    train: pd.DataFrame,
    items: pd.DataFrame | None,
    custom: dict[str, float] | None = None,
    training: str = "",
) -> tuple[Path, CliRun]:
    """A fresh project with the training part imported and `nextbuy train` run on it."""
    project = WORK / name
    if project.exists():
        subprocess.run(["rm", "-rf", str(project)], check=True)
    project.mkdir(parents=True)
    nextbuy(project, "init")
    if custom:
        config = (project / "nextbuy.toml").read_text()
        lines = "\n".join(f"{k} = {v}" for k, v in custom.items())
        config = config.replace("[events.custom]\n", f"[events.custom]\n{lines}\n")
        (project / "nextbuy.toml").write_text(config)
    if training:
        config = (project / "nextbuy.toml").read_text()
        (project / "nextbuy.toml").write_text(
            config.replace("[training]\n", f"[training]\n{training}\n")
        )
    if items is not None:
        items.to_json(project / "items.jsonl", orient="records", lines=True)
        nextbuy(project, "import", "items", "items.jsonl")
    frame = train.copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).map(lambda t: t.isoformat())
    frame.to_parquet(project / "events.parquet", index=False)
    nextbuy(project, "import", "interactions", "events.parquet")
    seconds, peak = timed_peak(project, "train")
    meta = _serving_meta(project)
    choice = meta["choice"]
    return project, CliRun(
        chosen=choice["winner"]["label"],
        protocol=choice["protocol"],
        validation_ndcg=float(meta["metrics"]["ndcg@10"]),
        train_seconds=seconds,
        train_peak_mib=peak,
        leaderboard=_top_rows(choice),
        verdict=choice["verdict"],
    )


def _serving_meta(project: Path) -> dict[str, Any]:
    models = project / "nextbuy-data" / "models"
    version = json.loads((models / "serving.json").read_text())["version"]
    return json.loads((models / version / "meta.json").read_text())


def _top_rows(choice: dict[str, Any], n: int = 8) -> list[dict[str, Any]]:
    from nextbuy.evaluation.leaderboard import leaderboard_rows

    return [
        {k: row[k] for k in ("rank", "model", "matrix", "stage", "ndcg@10", "chosen")}
        for row in leaderboard_rows(choice, n)
    ]


def cli_lists(project: Path, users: list[str], new_only: bool | None) -> dict[str, list[str]]:
    """`nextbuy recommend` for these users: user → item ids, best first."""
    flag = [] if new_only is None else ["--new-only" if new_only else "--with-repeats"]
    (project / "users.txt").write_text(",".join(users))
    nextbuy(
        project,
        "recommend",
        "--users",
        ",".join(users),
        "--k",
        str(K),
        "--out",
        "recs.parquet",
        *flag,
    )
    recs = pd.read_parquet(project / "recs.parquet").sort_values(["user_id", "rank"])
    return recs.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()


# --------------------------------------------------------------------------- scoring


def score_lists(lists: dict[str, list[str]], setup: EvaluationSetup) -> dict[str, float]:
    """NDCG, precision, recall and hit rate @10 of id lists against the setup's truth."""
    index = {str(t): i for i, t in enumerate(setup.truth_item_ids)}
    outside = len(index) + 1
    top = np.full((setup.n_users, K), -1, np.int64)
    for row, user in enumerate(setup.user_ids):
        ids = [index.get(str(t), outside) for t in lists.get(str(user), [])[:K]]
        top[row, : len(ids)] = ids
    means = metrics.summarise(metrics.ranking_metrics(top, setup.truth, (K,)))
    return {m: means[f"{m}@{K}"] for m in ("ndcg", "precision", "recall", "hit_rate")}


def score_model(model: Recommender, setup: EvaluationSetup, items: pd.DataFrame | None) -> dict:
    model.fit(setup.data, items)
    top = model.recommend(setup.histories, K, setup.exclude).items
    top = fill_with_popular(top, setup)
    means = metrics.summarise(metrics.ranking_metrics(top, setup.truth, (K,)))
    return {m: means[f"{m}@{K}"] for m in ("ndcg", "precision", "recall", "hit_rate")}


def save(name: str, payload: dict[str, Any]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))


# --------------------------------------------------------------------------- parts


def part_movielens() -> None:
    data = load_movielens_100k()
    split = stratified_split(data.interactions, 0.25, by="item", seed=42)
    project, run = cli_project("movielens", split.train, data.items)
    setup = prepare(split.train, split.test, "standard", weights=DEFAULT_EVENT_WEIGHTS)
    lists = cli_lists(project, [str(u) for u in setup.user_ids], None)
    rows = [
        {"model": f"nextbuy train (chose {run.chosen})", **score_lists(lists, setup)},
        {"model": "ease λ=500 (same split)", **score_model(EASE(reg=500.0), setup, None)},
        {"model": "popularity", **score_model(PopularityModel(), setup, None)},
    ]
    save("movielens", {"run": asdict(run), "rows": rows})


def part_online_retail() -> None:
    data = load_online_retail()
    weights = {**DEFAULT_EVENT_WEIGHTS, **data.custom_event_types}
    split = temporal_split(data.interactions, 0.2)
    project, run = cli_project("online-retail", split.train, data.items, data.custom_event_types)
    out: dict[str, Any] = {"run": asdict(run), "protocols": {}}
    for protocol, new_only in (("repeat", False), ("discovery", True)):
        setup = prepare(split.train, split.test, protocol, weights=weights)
        lists = cli_lists(project, [str(u) for u in setup.user_ids], new_only)
        rows = [{"model": f"nextbuy train (chose {run.chosen})", **score_lists(lists, setup)}]
        rows.append({"model": "hybrid (BENCHMARKS.md)", "ndcg": HYBRID_FIGURES[protocol]})
        baselines: dict[str, Recommender] = {
            "popularity": PopularityModel(),
            "trending": TrendingModel(),
        }
        if protocol == "repeat":
            baselines["own_history"] = OwnHistory()
        rows += [{"model": n, **score_model(m, setup, data.items)} for n, m in baselines.items()]
        out["protocols"][protocol] = rows
    save("online-retail", out)


def part_online_retail_new_only() -> None:
    """The same split in a project that pins lists of new items (`exclude_seen = true`): the
    choice is then made on the discovery protocol."""
    data = load_online_retail()
    weights = {**DEFAULT_EVENT_WEIGHTS, **data.custom_event_types}
    split = temporal_split(data.interactions, 0.2)
    project, run = cli_project(
        "online-retail-new-only",
        split.train,
        data.items,
        data.custom_event_types,
        training="exclude_seen = true",
    )
    setup = prepare(split.train, split.test, "discovery", weights=weights)
    lists = cli_lists(project, [str(u) for u in setup.user_ids], None)
    row = {"model": f"nextbuy train, exclude_seen = true (chose {run.chosen})"}
    save(
        "online-retail-new-only", {"run": asdict(run), "row": {**row, **score_lists(lists, setup)}}
    )


def part_shapes() -> None:
    """Each synthetic shape through the CLI, both protocols, against the baselines."""
    out: dict[str, Any] = {}
    for name in SHAPES:
        shop = shaped_shop(name, seed=0)
        split = temporal_split(shop.interactions, 0.2)
        project, run = cli_project(f"shape-{name}", split.train, shop.items)
        validation = _validation_against_baselines(project)
        rows = {}
        for protocol, new_only in (("repeat", False), ("discovery", True)):
            setup = prepare(split.train, split.test, protocol)  # type: ignore[arg-type]
            lists = cli_lists(project, [str(u) for u in setup.user_ids], new_only)
            found = {"chosen": score_lists(lists, setup)["ndcg"]}
            baselines: dict[str, Recommender] = {
                "popularity": PopularityModel(),
                "trending": TrendingModel(),
            }
            if protocol == "repeat":
                baselines["own_history"] = OwnHistory()
            for label, model in baselines.items():
                found[label] = score_model(model, setup, shop.items)["ndcg"]
            rows[protocol] = found
        out[name] = {"run": asdict(run), "test": rows, "validation": validation}
    save("shapes", out)


def _validation_against_baselines(project: Path) -> dict[str, Any]:
    """The served candidate's validation NDCG@10 and the best baseline's, as `train` saw."""
    choice = _serving_meta(project)["choice"]
    protocol = choice["protocol"]
    baselines = [t for t in choice["trials"] if t.get("baseline") and protocol in t["scores"]]
    best = max(baselines, key=lambda t: t["scores"][protocol]["ndcg@10"])
    return {
        "protocol": protocol,
        "served": choice["winner"]["scores"][protocol]["ndcg@10"],
        "best_baseline": best["scores"][protocol]["ndcg@10"],
        "best_baseline_model": best["label"],
        "baseline_served": choice["baseline_served"],
        "candidates": len(choice["trials"]),
        "seconds": choice["seconds"],
        "budget": choice["budget_seconds"],
    }


def part_planted() -> None:
    """The synthetic taste shop: how well the chosen configuration and the best candidate of
    each single family (as the choice measured them) recover the planted truth, each user's
    10 likeliest next purchases among the items they have not had."""
    shop = SyntheticShop(n_users=4_000, n_items=1_500, n_categories=20, n_brands=40, seed=11)
    events = pd.concat(list(shop.events(250_000)), ignore_index=True)
    items = shop.items()
    settings = Settings()
    choice = choose(events, items, settings, budget="4m")
    best: dict[str, Any] = {}
    for trial in choice.trials:
        family = trial.candidate.model
        if trial.error or trial.candidate.baseline or family in ("blend", "hybrid"):
            continue
        key = family + ("+side" if trial.candidate.params.get("side_weight") else "")
        if key not in best or trial.value("discovery") > best[key].value("discovery"):
            best[key] = trial
    contenders = {f"chosen: {choice.winner.candidate.label()}": choice.winner.candidate}
    contenders.update({f"best {k}": t.candidate for k, t in best.items()})
    for name in ("popularity", "trending"):
        contenders[name] = Candidate(name, {})
    users = sorted(events["user_id"].dropna().unique())[:2_000]
    truth_top = _planted_top(shop, users, events)
    rows = []
    for label, candidate in contenders.items():
        engine = Engine(choice.settings_for(settings), candidate.model, dict(candidate.params))
        engine.fit(events, items)
        lists = engine.recommend_users(users, K, True)
        rows.append({"model": label, **_planted_scores(lists, truth_top)})
    save("planted", {"rows": rows, "verdict": choice.verdict(), "protocol": choice.protocol})


def _planted_top(shop: SyntheticShop, users: list[str], events: pd.DataFrame) -> dict:
    had = events.dropna(subset=["user_id"]).groupby("user_id")["item_id"].agg(set).to_dict()
    affinity = shop.true_affinity(users)
    ids = shop.item_ids
    out = {}
    for row, user in enumerate(users):
        order = np.argsort(-affinity[row], kind="stable")
        out[user] = [str(ids[i]) for i in order if str(ids[i]) not in had.get(user, set())][:K]
    return out


def _planted_scores(lists: pd.DataFrame, truth: dict[str, list[str]]) -> dict[str, float]:
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    by_user = lists.groupby("user_id", sort=False)["item_id"].agg(list).to_dict()
    ndcg, hits = [], []
    for user, wanted in truth.items():
        got = [str(i) for i in by_user.get(user, [])][:K]
        gains = np.array([1.0 if i in set(wanted) else 0.0 for i in got])
        ndcg.append(float((gains * discounts[: len(gains)]).sum() / discounts.sum()))
        hits.append(gains.sum() / K)
    return {"ndcg_vs_planted": float(np.mean(ndcg)), "precision_vs_planted": float(np.mean(hits))}


def part_timing() -> None:
    """Wall clock and peak memory of `nextbuy train` on the bundled sample (its default budget)
    and on the 100,000-item benchmark catalogue of bench_serving.py (1M events)."""
    out: dict[str, Any] = {}
    sample = load_sample_shop()
    _, run = cli_project(
        "timing-sample", sample.interactions, sample.items, sample.custom_event_types
    )
    out["bundled sample"] = asdict(run)
    big = SyntheticShop(n_users=50_000, n_items=100_000, n_categories=50, n_brands=200, seed=0)
    events = pd.concat(list(big.events(1_000_000)), ignore_index=True)
    _, run = cli_project("timing-100k", events, big.items())
    out["100,000-item catalogue, 1M events"] = asdict(run)
    save("timing", out)


# --------------------------------------------------------------------------- report


FORMATS = {
    "search s": ".0f",
    "train s": ".0f",
    "peak MiB": ",.0f",
    "train s (choice + final fit)": ".0f",
}


def _rows_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(pd.DataFrame(rows), FORMATS)


def _load(name: str) -> Any:
    path = WORK / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _run_line(run: dict[str, Any]) -> str:
    return (
        f"`nextbuy train` chose **{run['chosen']}** ({run['protocol']} lists); training took "
        f"{run['train_seconds']:.0f} s wall clock (choice and the final fit), peak "
        f"{run['train_peak_mib']:,.0f} MiB. Verdict: {run['verdict']}."
    )


def _report_movielens() -> str | None:
    found = _load("movielens")
    if found is None:
        return None
    return (
        "### MovieLens 100k (Microsoft Recommenders protocol, per-item split)\n\n"
        "Ratings only, so the choice held out a random tenth of each customer's ratings. "
        + _run_line(found["run"])
        + "\n\n"
        + _rows_table(found["rows"])
    )


def _report_online_retail() -> str | None:
    found = _load("online-retail")
    if found is None:
        return None
    text = [
        "### Online Retail (the hybrid benchmark's temporal split)\n\n" + _run_line(found["run"])
    ]
    names = {"repeat": "repeat-aware (lists as served)", "discovery": "discovery (`--new-only`)"}
    for protocol, rows in found["protocols"].items():
        text.append(f"{names[protocol]}:\n\n" + _rows_table(rows))
    pinned = _load("online-retail-new-only")
    if pinned is not None:
        text.append(
            "A project that pins lists of new items (`exclude_seen = true` in nextbuy.toml), "
            "so that the choice is made on the discovery protocol: "
            + _run_line(pinned["run"])
            + "\n\n"
            + _rows_table([pinned["row"]])
        )
    return "\n\n".join(text)


def _report_shapes() -> str | None:
    found = _load("shapes")
    if found is None:
        return None
    rows = []
    for name, part in found.items():
        run = part["run"]
        for protocol, scores in part["test"].items():
            baselines = {k: v for k, v in scores.items() if k != "chosen"}
            best = max(baselines, key=baselines.get)
            rows.append(
                {
                    "shape": name,
                    "protocol": protocol + (" (in force)" if protocol == run["protocol"] else ""),
                    "chosen": run["chosen"],
                    "NDCG@10": scores["chosen"],
                    **{
                        k: scores.get(k, float("nan"))
                        for k in ("popularity", "trending", "own_history")
                    },
                    "vs best baseline": f"{scores['chosen'] / baselines[best] - 1:+.1%} ({best})",
                }
            )
    validation = [
        {
            "shape": name,
            "protocol": part["validation"]["protocol"],
            "served": part["validation"]["served"],
            "best baseline": part["validation"]["best_baseline"],
            "which": part["validation"]["best_baseline_model"],
            "baseline served": part["validation"]["baseline_served"],
            "candidates": part["validation"]["candidates"],
            "search s": part["validation"]["seconds"],
            "train s": part["run"]["train_seconds"],
            "peak MiB": part["run"]["train_peak_mib"],
        }
        for name, part in found.items()
    ]
    return (
        "### Shops of other shapes (synthetic, planted truth; `nextbuy.datasets.shapes`)\n\n"
        "Global temporal split (last 20% of events are test). Lists as served are scored on "
        "everything bought next (repeat-aware) and, with earlier purchases left out "
        "(`--new-only`), on new items only (discovery); the baselines are fitted on the same "
        "training part.\n\n"
        + _rows_table(rows)
        + "\n\nOn the validation window `nextbuy train` chose on (the served candidate never "
        "below the best baseline there, by construction of the gate):\n\n" + _rows_table(validation)
    )


def _report_planted() -> str | None:
    found = _load("planted")
    if found is None:
        return None
    return (
        "### The planted-taste shop: the chosen configuration against each single family\n\n"
        "Synthetic shop (4,000 customers, 1,500 items, 250,000 events, seed 11). Each "
        "candidate, as the choice configured it, trained on every event; scored against the "
        "planted truth: each customer's 10 likeliest next purchases among what they have not "
        f"had (first 2,000 customers). Choice: {found['verdict']} ({found['protocol']} "
        "lists).\n\n" + _rows_table(found["rows"])
    )


def _report_timing() -> str | None:
    found = _load("timing")
    if found is None:
        return None
    rows = [
        {
            "data": name,
            "chosen": run["chosen"],
            "train s (choice + final fit)": run["train_seconds"],
            "peak MiB": run["train_peak_mib"],
        }
        for name, run in found.items()
    ]
    return (
        "### What the choice costs\n\n"
        "`nextbuy train` with its default budget (10 minutes for a million events, scaled by "
        "the square root of the data's size), choice and final fit, one process; the demo sets "
        "100 s on the sample (`scripts/demo` was serving after 156 s; with 2 minutes of search "
        "the hybrid fitted in and the demo took 325 s).\n\n" + _rows_table(rows)
    )


READING = """\
### Reading

- The choice holds its own where a model has something to learn. MovieLens and Online Retail
  (both protocols) are above the references. On the four synthetic shapes the served
  configuration beats popularity, trending and own history on the protocol in force:
  - grocery: the hybrid, +2.5% over own history;
  - sparse catalogue: a blend led by EASE with side information and ALS, +46% over trending;
  - no attributes: bought-together, +12%;
  - few events: a blend of bought-together and item kNN, +3%.
- The other protocol:
  - grocery's lists without earlier purchases beat best sellers by 11.6%;
  - the sparse catalogue's and few-events' lists of new items beat own history on everything
    bought next;
  - not met on the no-attributes shop: returning customers had bought 13% of what they
    bought next, under the 20% at which lists repeat purchases, so its lists show new items
    only, and on everything bought next own history scores 4% more.
- The shapes gained in this version the structure real shops have: complements bought in the
  same order or the next, repeat purchases from the latest order, views within the aisle of
  what is bought, and customers of the large catalogue who keep to a few aisles. Before,
  even a model that knew each item's true aisle stayed within 8% of best sellers for
  returning customers; the gate then served a baseline on all four, as it should where
  nothing can be learned.
- On the planted-taste shop the chosen item-kNN recovers the planted truth 1.7% less well
  than the best ALS the search tried; the winner of the held-out events is not always the best
  on the underlying truth.
- Online Retail with no options serves repeat-aware lists (returning customers had bought 38%
  of what they bought next). Those lists beat the hybrid benchmark's repeat figure; with
  `--new-only` the hybrid proposes only items the customer has not had and beats its
  discovery figure too.
- `nextbuy recommend` now answers through the API's request path. The MovieLens and Online
  Retail rows above were measured that way; the `--new-only` lists gained most (0.1184 when
  the batch dropped earlier purchases from the repeat lists, 0.1387 now).
- The hybrid's repeat protocol changed in the previous version (every generator but
  buy-again proposes items beyond what the customer had); the hybrid section above predates
  that change and was not rerun."""


def part_report() -> None:
    parts = [
        f"Command: `{COMMAND}` (about 90 minutes). Every list comes from `nextbuy recommend` "
        "in a fresh project where `nextbuy init`, `nextbuy import` and `nextbuy train` ran "
        "with no options (the default budget, scaled to the data); the lists are scored here "
        "on the held-out test part, which the project never saw.",
        machine_summary(),
    ]
    for section in (
        _report_movielens(),
        _report_online_retail(),
        _report_shapes(),
        _report_planted(),
        _report_timing(),
    ):
        if section:
            parts.append(section)
    parts.append(READING)
    title = "The automatic choice (`nextbuy train` with no options)"
    write_section("choice", title, "\n\n".join(parts))


PARTS = {
    "movielens": part_movielens,
    "online-retail": part_online_retail,
    "online-retail-new-only": part_online_retail_new_only,
    "shapes": part_shapes,
    "planted": part_planted,
    "timing": part_timing,
    "report": part_report,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    chosen = list(PARTS) if args.part == "all" else [args.part]
    for name in chosen:
        started = time.perf_counter()
        PARTS[name]()
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
