"""Latency and throughput of the REST API on a 100,000-item synthetic catalogue with 1M events.

The server is pinned to one core and the load generator to the other (2-core machine):
1. p50/p95/p99 of the home placement (k=10, default rules on) at a fixed 200 requests/s,
   measured open-loop from the scheduled send time (no coordinated omission), 10% unknown users;
2. the most requests/s the server sustains (wrk, closed loop, 16 connections) and its errors;
3. event ingestion (wrk POSTing batches of 20 events) and a check that every acknowledged
   event is in the store.
Usage: python benchmarks/bench_serving.py [--seconds 30] [--runs 3]
Writes the "serving" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_summary, write_section

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "serving"
PORT = 8931
N_ITEMS, N_USERS, N_EVENTS = 100_000, 50_000, 1_000_000


def build_project() -> None:
    """Import the synthetic shop and train the serving model once; later runs reuse it."""
    if (WORK / "ready").exists():
        return
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "nextbuy.toml").write_text(
        'data_dir = "data"\n[training]\nmodel = "als"\n'
        "[training.params.als]\nfactors = 64\niterations = 10\n"
    )
    from nextbuy.training import train_version

    settings, store, shop, events = import_shop(WORK)
    started = time.perf_counter()
    outcome = train_version(settings, store)
    print(f"trained {outcome.version.name} in {time.perf_counter() - started:.0f} s", flush=True)
    store.close()
    users = events["user_id"].dropna().unique()
    rng = np.random.default_rng(0)
    # Disjoint samples: the users asked for on the home page get no event during the run
    # (so each run measures the same path), the event phase's users do.
    sampled = rng.choice(users, 10_000, replace=False)
    (WORK / "users.txt").write_text("\n".join(sampled[:5_000]) + "\n")
    (WORK / "event_users.txt").write_text("\n".join(sampled[5_000:]) + "\n")
    items = shop.items()["item_id"].to_numpy()
    (WORK / "items.txt").write_text("\n".join(rng.choice(items, 5_000, replace=False)) + "\n")
    (WORK / "ready").write_text("ok")


def import_shop(work: Path) -> tuple[Any, Any, Any, Any]:
    """The benchmark catalogue (synthetic shop, seed 0) imported into the project at `work`:
    its settings, open store, shop and events."""
    import pandas as pd

    from nextbuy.config import load_settings
    from nextbuy.datasets import SyntheticShop
    from nextbuy.ingest import ImportOptions, import_frame
    from nextbuy.store import open_store

    settings = load_settings(work / "nextbuy.toml")
    shop = SyntheticShop(n_users=N_USERS, n_items=N_ITEMS, n_categories=50, n_brands=200, seed=0)
    store = open_store(settings.store_path)
    import_frame(store, settings, shop.items(), "synthetic:items", ImportOptions("items"))
    events = pd.concat(list(shop.events(N_EVENTS)), ignore_index=True)
    import_frame(store, settings, events, "synthetic:events", ImportOptions("interactions"))
    return settings, store, shop, events


def keep_trained_store(work: Path) -> None:
    """Snapshot the store as trained (once) and start from it: exposures and events logged
    by earlier runs would otherwise grow its tables and slow every later run."""
    store, pristine = work / "data" / "nextbuy.db", work / "pristine.db"
    if not pristine.exists():
        shutil.copyfile(store, pristine)
    shutil.copyfile(pristine, store)


def start_server(
    work: Path = WORK, sources: Path | None = None, timeout: float = 300
) -> subprocess.Popen[bytes]:
    """`nextbuy serve` on core 0 (from `sources` when given, else the installed package);
    returns once /readyz answers."""
    command = [
        "taskset",
        "-c",
        "0",
        sys.executable,
        "-m",
        "nextbuy.cli",
        "serve",
        "--port",
        str(PORT),
    ]
    env = {**os.environ, "PYTHONPATH": str(sources)} if sources is not None else None
    server = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become ready")


async def _one_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    return status


HOME = "/v1/users/{user}/recommendations?k=10&placement=home"


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connection_pool(size: int = 32) -> tuple[list[Connection], asyncio.Queue[Connection]]:
    """Open keep-alive connections to the server, and a queue of the free ones."""
    connections = [await asyncio.open_connection("127.0.0.1", PORT) for _ in range(size)]
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for pair in connections:
        free.put_nowait(pair)
    return connections, free


async def open_loop(
    rate: float,
    seconds: float,
    users: list[str],
    unknown_share: float = 0.1,
    template: str = HOME,
) -> tuple[np.ndarray, int]:
    """Send `rate` requests/s on schedule; latency counts from the scheduled time."""
    connections, free = await connection_pool()
    rng = np.random.default_rng(1)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.2

    async def fire(at: float, path: str) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        pair = await free.get()
        try:
            status = await _one_request(*pair, path)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
        free.put_nowait(pair)
        latencies.append(time.perf_counter() - at)
        errors += status != 200

    tasks = []
    for n in range(int(rate * seconds)):
        known = rng.random() >= unknown_share
        user = users[rng.integers(len(users))] if known else f"new-{rng.integers(10**6)}"
        tasks.append(asyncio.create_task(fire(start + n / rate, template.format(user=user))))
    await asyncio.gather(*tasks)
    for _, writer in connections:
        writer.close()
    return np.asarray(latencies) * 1000, errors


def wrk(script: str, seconds: int, connections: int, env: dict[str, str]) -> str:
    command = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(HERE / "lua" / script),
        f"http://127.0.0.1:{PORT}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    return done.stdout + done.stderr


def parse_wrk(output: str) -> dict[str, float]:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "rps": rate,
        "errors": float(errors.group(1)) if errors else 0.0,
        "socket_errors": float(sum(int(g) for g in socket.groups())) if socket else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


def count_events() -> int:
    with sqlite3.connect(WORK / "data" / "nextbuy.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    build_project()
    users = (WORK / "users.txt").read_text().split()
    env = {
        "NEXTBUY_USERS_FILE": str(WORK / "users.txt"),
        "NEXTBUY_ITEMS_FILE": str(WORK / "items.txt"),
        "NEXTBUY_BATCH": "20",
    }
    event_env = {**env, "NEXTBUY_USERS_FILE": str(WORK / "event_users.txt")}
    os.sched_setaffinity(0, {1})  # the open-loop client, as wrk: the server has core 0
    keep_trained_store(WORK)
    server = start_server()
    try:
        fixed, closed, ingest, recent = [], [], [], []
        for _ in range(args.runs):
            millis, errors = asyncio.run(open_loop(200, args.seconds, users))
            fixed.append((*np.percentile(millis, [50, 95, 99]), errors, len(millis)))
            print(
                f"200 rps: p50 {fixed[-1][0]:.2f} ms, p95 {fixed[-1][1]:.2f}, "
                f"p99 {fixed[-1][2]:.2f}, errors {errors}",
                flush=True,
            )
            closed.append(parse_wrk(wrk("recommend.lua", args.seconds, 16, env)))
            print(f"max: {closed[-1]}", flush=True)
            before = count_events()
            output = wrk("events.lua", args.seconds, 8, event_env)
            acked = int(re.search(r"ACKED_REQUESTS (\d+)", output).group(1)) * 20  # type: ignore[union-attr]
            stored = count_events() - before
            result = parse_wrk(output)
            ingest.append((result["rps"] * 20, acked, stored))
            print(
                f"events: {ingest[-1][0]:,.0f}/s, acknowledged {acked}, stored {stored}", flush=True
            )
            # the event phase's users now have events since training: the rescoring path
            recent.append(parse_wrk(wrk("recommend.lua", args.seconds, 16, event_env)))
            print(f"max, shoppers with new events: {recent[-1]}", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
    write_report(fixed, closed, ingest, recent, args.seconds)


def write_report(fixed: list, closed: list, ingest: list, recent: list, seconds: int) -> None:
    med = statistics.median
    lines = [
        "| measure | median of runs | runs |",
        "|---|---:|---:|",
        f"| home placement at 200 req/s: p50 | {med(r[0] for r in fixed):.2f} ms | {len(fixed)} |",
        f"| home placement at 200 req/s: p95 | {med(r[1] for r in fixed):.2f} ms | {len(fixed)} |",
        f"| home placement at 200 req/s: p99 | {med(r[2] for r in fixed):.2f} ms | {len(fixed)} |",
        f"| errors at 200 req/s (all runs) | {sum(r[3] for r in fixed)} of "
        f"{sum(r[4] for r in fixed):,} | {len(fixed)} |",
        f"| sustained requests/s (wrk, 16 connections) | {med(r['rps'] for r in closed):,.0f} "
        f"| {len(closed)} |",
        f"| p99 at that load | {med(r['p99_ms'] for r in closed):.1f} ms | {len(closed)} |",
        f"| errors at that load (non-2xx + socket, all runs) | "
        f"{sum(r['errors'] + r['socket_errors'] for r in closed):.0f} | {len(closed)} |",
        f"| sustained requests/s, shoppers with events since training (rescored) | "
        f"{med(r['rps'] for r in recent):,.0f} | {len(recent)} |",
        f"| p99 at that load | {med(r['p99_ms'] for r in recent):.1f} ms | {len(recent)} |",
        f"| events ingested/s (batches of 20) | {med(r[0] for r in ingest):,.0f} | {len(ingest)} |",
        f"| acknowledged events missing from the store (all runs) | "
        f"{sum(r[1] - r[2] for r in ingest if r[1] > r[2])} | {len(ingest)} |",
    ]
    body = "\n".join(
        [
            f"Synthetic shop: {N_ITEMS:,} items, {N_USERS:,} users, {N_EVENTS:,} events; serving "
            "model ALS (64 factors); home placement, k=10, default rules (exclude purchased 30 "
            "days, exclude unavailable, diversity λ 0.7, at most 3 per category). Server pinned "
            f"to core 0, load generator to core 1; {seconds} s per measurement. Command: "
            "`python benchmarks/bench_serving.py`. The home page's users get no event during the "
            "run (their lists are precomputed at model load); the event phase posts for 5,000 "
            "other users, whose home pages are then measured too (pool rescoring).",
            "",
            machine_summary(),
            "",
            *lines,
        ]
    )
    write_section("serving", "REST API latency and throughput", body)


if __name__ == "__main__":
    main()
