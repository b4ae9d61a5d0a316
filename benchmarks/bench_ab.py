"""Serving latency of two commits, interleaved in one run on the same project.

The machine's speed swings by the hour, so the two commits take turns (base, head, head,
base, ...) on the serving benchmark's project (100,000 items, 50,000 users, 1M events, ALS
with 64 factors, trained once). Each turn starts `nextbuy serve` from
that commit's sources (a git worktree of each) pinned to core 0,
and measures from core 1, open loop at a fixed rate, latency counted from the scheduled time:
1. precomputed: home pages of users with nothing since training;
2. on request: home pages of users who have just sent an event (their pool is rescored).

Usage: python benchmarks/bench_ab.py [--base REV] [--head REV] [--rounds 3] [--seconds 20]
Writes the "redesign A/B" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (
    PORT,
    WORK,
    build_project,
    keep_trained_store,
    open_loop,
    start_server,
)
from common import machine_summary, write_section

REPO = Path(__file__).resolve().parents[1]
TREES = REPO / "benchmarks" / ".work" / "ab"
EVENT_USERS = 2_000


def worktree(rev: str) -> Path:
    """A commit's sources, checked out once beside the benchmark's work (so editing the
    working tree during a run changes neither side)."""
    wanted = subprocess.run(
        ["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = TREES / wanted[:12]
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), wanted], cwd=REPO, check=True
        )
    return tree / "src"


def stop(server: subprocess.Popen[bytes]) -> None:
    os.killpg(server.pid, signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def send_events(users: list[str], items: list[str]) -> None:
    """One view per user, so their next request is rescored on its pool."""
    rng = np.random.default_rng(7)
    for start in range(0, len(users), 100):
        batch = [
            {"user_id": u, "item_id": str(items[rng.integers(len(items))]), "event_type": "view"}
            for u in users[start : start + 100]
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{PORT}/v1/events",
            data=json.dumps({"events": batch}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status in (200, 202)


def one_turn(sources: Path, args: argparse.Namespace, users: list[str], items: list[str]) -> dict:
    keep_trained_store(WORK)
    server = start_server(WORK, sources, timeout=600)
    try:
        asyncio.run(open_loop(args.rate, 3, users))  # warm-up, not counted
        cold, errors = asyncio.run(open_loop(args.rate, args.seconds, users))
        movers = (WORK / "event_users.txt").read_text().split()[:EVENT_USERS]
        send_events(movers, items)
        time.sleep(1.0)
        moved, moved_errors = asyncio.run(open_loop(args.rate, args.seconds, movers, 0.0))
    finally:
        stop(server)
    return {
        "precomputed": [float(v) for v in np.percentile(cold, [50, 95, 99])],
        "on_request": [float(v) for v in np.percentile(moved, [50, 95, 99])],
        "errors": errors + moved_errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="b2808bb")
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    build_project()
    sides = {"base": worktree(args.base), "head": worktree(args.head)}
    users = (WORK / "users.txt").read_text().split()
    items = (WORK / "items.txt").read_text().split()
    os.sched_setaffinity(0, {1})
    results: dict[str, list[dict]] = {"base": [], "head": []}
    for round_ in range(args.rounds):
        order = ("base", "head") if round_ % 2 == 0 else ("head", "base")
        for side in order:
            found = one_turn(sides[side], args, users, items)
            results[side].append(found)
            print(f"round {round_ + 1} {side}: {found}", flush=True)
    write_report(results, args)


def write_report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    head_rev = subprocess.run(
        ["git", "rev-parse", "--short", args.head], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    med = statistics.median
    rows = ["| path | percentile | base | head | head ÷ base |", "|---|---|---:|---:|---:|"]
    for path in ("precomputed", "on_request"):
        for i, name in enumerate(("p50", "p95", "p99")):
            base = med(r[path][i] for r in results["base"])
            head = med(r[path][i] for r in results["head"])
            rows.append(
                f"| {path.replace('_', ' ')} | {name} | {base:.2f} ms | "
                f"{head:.2f} ms | {head / base:.2f} |"
            )
    errors = {side: sum(r["errors"] for r in runs) for side, runs in results.items()}
    body = "\n".join(
        [
            f"Base {args.base} (before the pipeline redesign) against head {head_rev}, "
            f"{args.rounds} interleaved rounds of {args.seconds} s per path at "
            f"{args.rate:.0f} requests/s, medians over rounds. Project of the serving benchmark "
            "(100,000 items, 50,000 users, 1M events, ALS 64 factors), home placement with "
            "its default rules; server on core 0, client on core 1. Command: "
            f"`python benchmarks/bench_ab.py --base {args.base}`. Errors (non-200): base "
            f"{errors['base']}, head {errors['head']}.",
            "",
            machine_summary(),
            "",
            *rows,
        ]
    )
    write_section("redesign-ab", "Serving latency before and after the pipeline redesign", body)


if __name__ == "__main__":
    main()
