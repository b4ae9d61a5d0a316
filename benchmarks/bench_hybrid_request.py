"""In-process latency of the hybrid's home placement in a trained project (the demo's, say).

Loads the project's serving version into `ServingState` and times `for_user` (k=10, home
placement, rules and reasons included) on one core with one BLAS thread:
1. trained users with nothing new (the list the pipeline precomputed at training);
2. the same users after one view event each (the pipeline on the request);
3. `OnlineRanker.score` alone for those shoppers (candidate generation and ranking).
Usage: python benchmarks/bench_hybrid_request.py --dir demo [--requests 400] [--runs 5]
(`scripts/demo --no-serve` trains the demo project first.) Writes the "hybrid-request"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_summary, write_section


def percentiles(call: Callable[[int], object], n: int, runs: int) -> tuple[float, float]:
    """Median over runs of each run's median and p99 (ms)."""
    found = []
    for _ in range(runs):
        times = []
        for i in range(n):
            started = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - started) * 1000)
        found.append((float(np.median(times)), float(np.percentile(times, 99))))
    return float(np.median([f[0] for f in found])), float(np.median([f[1] for f in found]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="a project trained with hybrid")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    threadpool_limits(1)  # as `nextbuy serve` does
    from nextbuy.config import load_settings
    from nextbuy.hybrid.online import FreshEvent
    from nextbuy.serving.online import OnlineEvent
    from nextbuy.serving.recommend import Ask, for_user
    from nextbuy.serving.state import ServingState

    os.chdir(args.dir)
    state = ServingState(load_settings(Path("nextbuy.toml")))
    state.check_model()
    live = state.current()
    # every request generates its candidates, as the rows below say: the same shoppers come
    # back run after run and would otherwise find what an earlier run generated
    live.model.model.online.generated.max_entries = 0
    n = args.requests
    users = [str(u) for u in live.model.data.user_ids[:n]]
    items = [str(i) for i in live.model.data.item_ids]

    def ask(i: int) -> object:
        return for_user(state, live, Ask(user_id=users[i % len(users)], k=10, placement="home"))

    precomputed = percentiles(ask, n, args.runs)
    now = int(time.time() * 1000)
    for j, user in enumerate(users):
        event = OnlineEvent(items[(j * 7) % len(items)], "view", 1.0, now, 10**9 + j)
        state.online.add("u:" + user, [event])
    pipeline = percentiles(ask, n, args.runs)
    online = live.model.model.online

    def score(i: int) -> object:
        fresh = [FreshEvent(items[(i * 7) % len(items)], "view", time.time_ns() - 10**9)]
        return online.score(users[i % len(users)], fresh, time.time_ns())

    ranking = percentiles(score, n, args.runs)
    rows = [
        ("trained user, nothing new: the list precomputed at training", precomputed),
        ("shopper with a new view: the pipeline on the request, rules and reasons", pipeline),
        ("of which candidate generation and ranking (`OnlineRanker.score`)", ranking),
    ]
    body = "\n".join(
        [
            f"Project `{args.dir.name}`: {live.model.n_items:,} items, "
            f"{len(live.model.data.user_ids):,} trained users, model `hybrid`; in-process "
            f"`for_user`, home placement, k=10, one core, one BLAS thread; medians over "
            f"{args.runs} runs of each run's median and p99 of {n} requests. Command: "
            f"`python benchmarks/bench_hybrid_request.py --dir {args.dir.name}`.",
            "",
            machine_summary(),
            "",
            "| path | median | p99 |",
            "|---|---:|---:|",
            *(f"| {label} | {p50:.2f} ms | {p99:.2f} ms |" for label, (p50, p99) in rows),
        ]
    )
    write_section("hybrid-request", "Serving the hybrid: the demo's model, in-process", body)


if __name__ == "__main__":
    main()
