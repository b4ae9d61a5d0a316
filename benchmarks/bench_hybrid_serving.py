"""Latency of the hybrid pipeline served on the request, on the 100,000-item benchmark catalogue.

The same synthetic shop as bench_serving.py (100,000 items, 50,000 users, 1M events), trained
with `model = "hybrid"` (configuration below: one label window, 20,000 training users, EASE
on the 5,000 most-bought items). Server pinned to one core, load generator to the other:
1. a view event is posted for each of 5,000 shoppers, so each of their home pages runs the
   pipeline (candidate generators on the trained history plus the new event, unless the
   server generated them when the event arrived; features, LightGBM, rules, reasons);
2. their home pages (k=10) closed loop (wrk, one connection) and open loop (Poisson arrivals),
   with the server generating on the request and generating ahead; then pages 0.2 s after
   each shopper's event, events arriving throughout, alone and among the serving benchmark's
   200 pages/s of trained users and unknown visitors; each measurement also reads the
   server's own latency histogram (/metrics) for the pages;
3. in-process, each stage of `OnlineRanker.score` (medians over 1,000 requests).
Usage: python benchmarks/bench_hybrid_serving.py [--seconds 30] [--runs 3] [--rate 50]
       [--event-rate 20] [--shop-rate 200]
Writes the "hybrid-serving" section of BENCHMARKS.md. With `--busy 0.6` it runs only the
serving benchmark's load, with a process on the server's core that computes 60% of every
10 ms (a busy neighbour; not a slower machine: the scheduler hands the core to a waking
server first), and prints the rows without writing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import (
    HOME,
    N_EVENTS,
    N_ITEMS,
    N_USERS,
    PORT,
    Connection,
    _one_request,
    connection_pool,
    import_shop,
    keep_trained_store,
    parse_wrk,
    start_server,
    wrk,
)
from common import machine_summary, write_section

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "serving-hybrid"
SHOPPERS = 5_000
PAGE_ROUTE = ('route="/v1/users/{user_id}/recommendations"', 'method="GET"')
CONFIG = """data_dir = "data"
[training]
model = "hybrid"
[training.params.hybrid]
label_windows = 1
max_train_users = 20000
generators = [
  { name = "als", n = 100, params = { factors = 64, regularization = 1.0, alpha = 10.0 } },
  { name = "ease", n = 100, params = { reg = 3000.0, prune_items = true, max_items = 5000 } },
  { name = "itemknn", n = 50, params = { neighbours = 100 } },
  { name = "recent", n = 50, params = { neighbours = 100 } },
  { name = "content", n = 50, params = { embeddings = "none", popularity_weight = 0.1 } },
  { name = "trending", n = 30, params = { half_life_days = 7.0 } },
  { name = "category", n = 30, params = {} },
]
"""


def build_project() -> float | None:
    """Import the synthetic shop and train the hybrid once; returns the training seconds."""
    if (WORK / "ready").exists():
        return None
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "nextbuy.toml").write_text(CONFIG)
    from nextbuy.training import train_version

    settings, store, shop, events = import_shop(WORK)
    started = time.perf_counter()
    outcome = train_version(settings, store, step=_say)
    seconds = time.perf_counter() - started
    print(f"trained {outcome.version.name} in {seconds:.0f} s", flush=True)
    store.close()
    rng = np.random.default_rng(0)
    users = rng.choice(events["user_id"].dropna().unique(), 2 * SHOPPERS, replace=False)
    (WORK / "users.txt").write_text("\n".join(users[:SHOPPERS]) + "\n")
    (WORK / "shoppers.txt").write_text("\n".join(users[SHOPPERS:]) + "\n")
    items = rng.choice(shop.items()["item_id"].to_numpy(), 5_000, replace=False)
    (WORK / "items.txt").write_text("\n".join(items) + "\n")
    (WORK / "train_seconds").write_text(f"{seconds:.1f}")
    keep_trained_store(WORK)
    (WORK / "ready").write_text("ok")
    return seconds


def _say(message: str) -> None:
    print(f"  {message}", flush=True)


def post_events(shoppers: list[str], items: list[str]) -> None:
    """One view for each shopper, now: from here on their home pages run the pipeline."""
    rng = np.random.default_rng(2)
    for start in range(0, len(shoppers), 100):
        batch = [
            {"user_id": user, "item_id": str(rng.choice(items)), "event_type": "view"}
            for user in shoppers[start : start + 100]
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{PORT}/v1/events",
            data=json.dumps({"events": batch}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200, answer.status


def wrk_latency(users_file: Path, seconds: int) -> dict[str, float]:
    """One connection, closed loop (wrk, C). wrk's percentiles are corrected for coordinated
    omission: a request slower than the run's mean interval adds the samples of the requests
    that would have waited behind it at that mean rate."""
    env = {"NEXTBUY_USERS_FILE": str(users_file), "NEXTBUY_UNKNOWN_SHARE": "0"}
    output = wrk("recommend.lua", seconds, 1, env)
    out = _percentiles(output)
    out["rps"] = parse_wrk(output)["rps"]
    return out


def trivial_endpoint(args: argparse.Namespace) -> tuple[float, ...]:
    """p50 of /healthz under wrk (one connection) and under the open-loop client: what the
    client and the machine add to any request."""
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c1", "-d5s", "--latency"]
    output = subprocess.run(
        [*command, f"http://127.0.0.1:{PORT}/healthz"], capture_output=True, text=True
    ).stdout
    closed = _percentiles(output)["p50"]
    plan = pages_plan(args.rate, 10, ["-"], "health", 0, template="/healthz")
    traffic = asyncio.run(paced(plan, 0))
    return (closed, float(np.percentile(traffic.latencies["health"], 50)))


def _percentiles(output: str) -> dict[str, float]:
    found = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+(?:us|ms|s))\s*$", output, re.M))
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    out = {}
    for level, text in found.items():
        number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        out[f"p{level}"] = float(number) * scale[unit]
    return out


def _metrics_text() -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as answer:
        return answer.read().decode()


def page_histogram() -> dict[float, float]:
    """The server's own latency histogram of the recommendations route (bucket bound in
    seconds → requests up to it, cumulative since start)."""
    out: dict[float, float] = {}
    for line in _metrics_text().splitlines():
        if line.startswith("nextbuy_http_request_seconds_bucket") and all(
            label in line for label in PAGE_ROUTE
        ):
            bound = re.search(r'le="([^"]+)"', line).group(1)  # type: ignore[union-attr]
            out[float(bound)] = float(line.rsplit(" ", 1)[1])
    return out


def served_within(before: dict[float, float], after: dict[float, float], bound: float) -> float:
    """Share of the pages between two histograms that the server answered within `bound`
    seconds (a bucket bound: exact, no interpolation)."""
    total = after[math.inf] - before.get(math.inf, 0.0)
    return (after[bound] - before.get(bound, 0.0)) / max(total, 1.0)


def candidate_counts() -> dict[str, float]:
    """The server's candidate-set counters and queue (from /metrics)."""
    text = _metrics_text()
    found = re.findall(r'^nextbuy_candidate_sets_total\{outcome="(\w+)"\} ([\d.e+]+)$', text, re.M)
    out = {outcome: float(value) for outcome, value in found}
    queue = re.search(r"^nextbuy_candidate_queue ([\d.e+]+)$", text, re.M)
    out["queue"] = float(queue.group(1)) if queue else 0.0
    return out


def wait_for_generation(timeout: float = 600) -> None:
    """Until the server has generated the candidates of every shopper an event named."""
    deadline = time.monotonic() + timeout
    last = -1.0
    while time.monotonic() < deadline:
        counts = candidate_counts()
        done = counts.get("generated_ahead", 0.0)
        if counts["queue"] == 0 and done == last:
            return
        last = done
        time.sleep(1.0)
    raise SystemExit("the server did not finish generating candidates")


async def _post_event(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str, item: str
) -> int:
    body = json.dumps({"user_id": user, "item_id": item, "event_type": "view"}).encode()
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    answer = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", answer).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    return int(answer.split(b" ", 2)[1])


class Step(NamedTuple):
    """One scheduled request of an open-loop plan; with `view` (user, item), that view is
    posted at `moment` and the page asked `page_delay` s later."""

    moment: float
    kind: str
    path: str
    view: tuple[str, str] | None = None


@dataclass
class Traffic:
    """What an open-loop run measured, by kind of request ("post" for event POSTs): latencies
    (ms), errors, and how late the client's own timer fired (ms; excluded from latencies)."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    late: list[float] = field(default_factory=list)


def arrivals(rate: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson arrival times in [0, seconds): independent shoppers, as in a shop (an even
    grid would make some streams collide on every tick and others never)."""
    if rate <= 0:
        return np.zeros(0)
    gaps = rng.exponential(1.0 / rate, int(rate * seconds * 1.5) + 20)
    times = np.cumsum(gaps)
    return times[times < seconds]


async def paced(plan: list[Step], page_delay: float) -> Traffic:
    """Run `plan` open loop (moments in seconds from the start). A latency counts from the
    moment the client's timer fired, so a late wake-up of this Python client is not charged
    to the server (it is kept in `late`); a wait for a free connection is, so a stalled
    server still shows."""
    pairs, free = await connection_pool()
    traffic = Traffic()
    start = time.perf_counter() + 0.2

    async def at(moment: float) -> float:
        await asyncio.sleep(max(0.0, start + moment - time.perf_counter()))
        woke = time.perf_counter()
        traffic.late.append((woke - start - moment) * 1000)
        return woke

    async def ask(kind: str, send: Callable[[Connection], Awaitable[int]], sent: float) -> None:
        pair = await free.get()
        try:
            status = await send(pair)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
        free.put_nowait(pair)
        traffic.latencies.setdefault(kind, []).append((time.perf_counter() - sent) * 1000)
        traffic.errors[kind] = traffic.errors.get(kind, 0) + (status != 200)

    async def one(step: Step) -> None:
        moment = step.moment
        if step.view is not None:
            user, item = step.view
            await ask("post", lambda pair: _post_event(*pair, user, item), await at(moment))
            moment += page_delay
        await ask(step.kind, lambda pair: _one_request(*pair, step.path), await at(moment))

    await asyncio.gather(*(asyncio.create_task(one(step)) for step in plan))
    for _, writer in pairs:
        writer.close()
    return traffic


def pages_plan(
    rate: float, seconds: float, users: list[str], kind: str, seed: int, template: str = HOME
) -> list[Step]:
    """Home pages of random `users` arriving at `rate` per second."""
    rng = np.random.default_rng(seed)
    return [
        Step(float(t), kind, template.format(user=users[rng.integers(len(users))]))
        for t in arrivals(rate, seconds, rng)
    ]


def events_plan(
    rate: float, seconds: float, shoppers: list[str], items: list[str], seed: int
) -> list[Step]:
    """Views arriving at `rate` per second, each followed by that shopper's home page."""
    rng = np.random.default_rng(seed)
    steps = []
    for t in arrivals(rate, seconds, rng):
        user, item = shoppers[rng.integers(len(shoppers))], str(items[rng.integers(len(items))])
        steps.append(Step(float(t), "after event", HOME.format(user=user), (user, item)))
    return steps


def _served_ahead(before: dict[str, float]) -> float:
    """Share of pipeline requests since `before` that found their candidates generated."""
    after = candidate_counts()
    ahead = after.get("ranked_ahead", 0.0) - before.get("ranked_ahead", 0.0)
    inline = after.get("generated_inline", 0.0) - before.get("generated_inline", 0.0)
    return ahead / max(ahead + inline, 1.0)


def ids_of_project() -> tuple[list[str], list[str], list[str]]:
    """The benchmark project's shoppers (an event each), trained users and items."""

    def read(name: str) -> list[str]:
        return (WORK / name).read_text().split()

    return read("shoppers.txt"), read("users.txt"), read("items.txt")


def over_http(args: argparse.Namespace) -> dict[str, list[tuple[float, ...]]]:
    """Per path: (p50, p90/p95, p99, errors, requests, share ranked ahead) of each run."""
    os.sched_setaffinity(0, {1})  # the open-loop client, as wrk: the server has core 0
    shoppers, trained, items = ids_of_project()
    out: dict[str, list[tuple[float, ...]]] = {}
    # first without generation ahead: every shopper's request generates its candidates
    for mode in ("inline", "ahead"):
        keep_trained_store(WORK)
        os.environ["NEXTBUY_SERVING__CANDIDATE_CACHE"] = "0" if mode == "inline" else "10000"
        server = start_server(WORK)
        try:
            post_events(shoppers, items)
            if mode == "ahead":
                wait_for_generation()
            asyncio.run(paced(pages_plan(args.rate, 3, trained, "warm-up", 0), 0))
            if mode == "ahead":
                out["floor"] = [trivial_endpoint(args)]
            _measure(args, mode, server.pid, shoppers, trained, items, out)
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=60)
    os.environ.pop("NEXTBUY_SERVING__CANDIDATE_CACHE")
    return out


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(
    args: argparse.Namespace,
    mode: str,
    server_pid: int,
    shoppers: list[str],
    trained: list[str],
    items: list[str],
    out: dict[str, list[tuple[float, ...]]],
) -> None:
    """Each row: client p50, p90 (closed) or p95 (open), p99, errors, requests, share ranked
    ahead, then the shares of the same pages the server answered within 5 and 10 ms."""

    def keep(key: str, row: tuple[float, ...], counts: dict, pages: dict) -> None:
        after = page_histogram()
        server = (served_within(pages, after, 0.005), served_within(pages, after, 0.01))
        out.setdefault(key, []).append((*row, _served_ahead(counts), *server))
        print(f"{key}: p50 {row[0]:.2f} ms, p99 {row[2]:.2f}; server within 5/10 ms {server}")

    for _ in range(args.runs):
        paths = [(mode, "shoppers.txt")]
        if mode == "ahead":
            paths.append(("precomputed", "users.txt"))
        for name, path in paths:
            counts, pages = candidate_counts(), page_histogram()
            found = wrk_latency(WORK / path, args.seconds)
            row = (found["p50"], found["p90"], found["p99"], 0.0, found["rps"] * args.seconds)
            keep(f"closed {name}", row, counts, pages)
        if mode == "inline":
            continue
        for name, users in (("ahead", shoppers), ("precomputed", trained)):
            counts, pages = candidate_counts(), page_histogram()
            traffic = asyncio.run(paced(pages_plan(args.rate, args.seconds, users, name, 1), 0))
            keep(f"open {name}", _row(traffic, name), counts, pages)
        counts, pages = candidate_counts(), page_histogram()
        plan = events_plan(args.event_rate, args.seconds, shoppers, items, 3)
        traffic = asyncio.run(paced(plan, args.page_delay))
        keep("open event", _row(traffic, "after event"), counts, pages)
        counts, pages = candidate_counts(), page_histogram()
        used, started = cpu_seconds(server_pid), time.monotonic()
        traffic = asyncio.run(paced(shop_plan(args, shoppers, trained, items), args.page_delay))
        busy = (cpu_seconds(server_pid) - used) / (time.monotonic() - started)
        out.setdefault("busy", []).append((busy,))
        keep("open shop", _row(traffic, "trained", "unknown", "after event"), counts, pages)
        # the server's histogram does not tell the pipeline pages from the rest
        row = _row(traffic, "after event")
        out.setdefault("open shop-events", []).append(
            (*row, _served_ahead(counts), math.nan, math.nan)
        )
        print(f"  of which after an event: p50 {row[0]:.2f} ms, p99 {row[2]:.2f}")
        out.setdefault("late", []).append((float(np.percentile(traffic.late, 99)),))
        out.setdefault("posts", []).append(
            tuple(np.percentile(traffic.latencies["post"], [50, 99]))
        )


def shop_plan(
    args: argparse.Namespace, shoppers: list[str], trained: list[str], items: list[str]
) -> list[Step]:
    """The serving benchmark's load, `args.shop_rate` home pages/s (a tenth of them unknown
    visitors), with views arriving at `args.event_rate`/s among them, each followed by the
    shopper's page: the pages of shoppers who just did something run the pipeline."""
    unknown = [f"new-{n}" for n in range(100_000)]
    rest = args.shop_rate * 0.9 - args.event_rate
    return sorted(
        pages_plan(rest, args.seconds, trained, "trained", 4)
        + pages_plan(args.shop_rate * 0.1, args.seconds, unknown, "unknown", 5)
        + events_plan(args.event_rate, args.seconds, shoppers, items, 6)
    )


def _row(traffic: Traffic, *kinds: str) -> tuple[float, ...]:
    """(p50, p95, p99, errors, requests) of the pages of these kinds."""
    millis = [ms for kind in kinds for ms in traffic.latencies[kind]]
    errors = sum(traffic.errors[kind] for kind in kinds)
    return (*np.percentile(millis, [50, 95, 99]), float(errors), float(len(millis)))


def stage_shares(n_requests: int = 1_000) -> list[tuple[str, float, float]]:
    """In-process: median and p99 ms of each stage of `OnlineRanker.score`, one core."""
    from nextbuy.config import load_settings
    from nextbuy.hybrid.candidates import merge
    from nextbuy.hybrid.online import FreshEvent, _blocked
    from nextbuy.serving.state import ServingState

    os.sched_setaffinity(0, {0})
    threadpool_limits(1)  # as `nextbuy serve` does
    state = ServingState(load_settings(WORK / "nextbuy.toml"))
    state.check_model()
    online = state.current().model.model.online
    shoppers, _, items = ids_of_project()
    times: dict[str, list[float]] = {}

    def timed(name: str, started: float) -> None:
        times.setdefault(name, []).append((time.perf_counter() - started) * 1000)

    for i in range(n_requests):
        now = time.time_ns()
        fresh = [FreshEvent(items[i % len(items)], "view", now - 10**9)]
        first = t = time.perf_counter()
        events = online.user_events(shoppers[i % len(shoppers)], fresh, now)
        requests = online.request(shoppers[i % len(shoppers)], events)
        timed("the shopper's events and history rows", t)
        tops = {}
        for generator in online.stage.generators:
            t = time.perf_counter()
            request = requests[generator.half_life_days]
            blocked = _blocked(request.exclude, online.n_items)
            rows = generator._rows(request)
            tops[generator.name] = online.tops.top(generator.model, rows, generator.n, blocked)
            timed(f"generator {generator.name}", t)
        t = time.perf_counter()
        candidates = merge(tops, 1, online.n_items)
        timed("merge", t)
        t = time.perf_counter()
        facts = online.event_facts(candidates, events)
        timed("features: what they read of the shopper's events", t)
        t = time.perf_counter()
        x = online.timed_features(candidates, facts, now)
        timed(f"features: at the request's time and context ({x.shape[1]} per candidate)", t)
        t = time.perf_counter()
        online.booster.predict(x, num_iteration=online.best_iteration, num_threads=1)
        timed("LightGBM", t)
        timed("all of the above", first)
        on_request = times[
            f"features: at the request's time and context ({x.shape[1]} per candidate)"
        ][-1]
        on_request += times["LightGBM"][-1]
        times.setdefault(
            "of which on the request when generated ahead (features at its time, LightGBM)", []
        ).append(on_request)
        times.setdefault("candidates per request", []).append(float(len(x)))
    return [(k, float(np.median(v)), float(np.percentile(v, 99))) for k, v in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument(
        "--event-rate", type=float, default=20.0, help="events (each then a page) per second"
    )
    parser.add_argument(
        "--page-delay", type=float, default=0.2, help="seconds from an event to the next page"
    )
    parser.add_argument(
        "--shop-rate", type=float, default=200.0, help="home pages/s of the mixed shop load"
    )
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--busy", type=float, default=0.0, help="share of the server's core taken by a busy process"
    )
    args = parser.parse_args()
    build_project()
    if args.build_only:
        return
    if args.busy > 0:
        contended(args)
        return
    http = over_http(args)
    stages = stage_shares()
    write_report(http, stages, args)


BUSY_PERIOD = 0.01  # seconds: the busy process computes a share of each period, then sleeps


def keep_busy(share: float) -> None:
    """Compute `share` of every period on core 0, the server's, until killed."""
    os.sched_setaffinity(0, {0})
    while True:
        started = time.perf_counter()
        while time.perf_counter() - started < share * BUSY_PERIOD:
            pass
        time.sleep((1 - share) * BUSY_PERIOD)


def contended(args: argparse.Namespace) -> None:
    """The serving benchmark's load, `args.runs` times, with a busy process beside the server."""
    os.sched_setaffinity(0, {1})
    shoppers, trained, items = ids_of_project()
    keep_trained_store(WORK)
    server = start_server(WORK)
    busy = None
    try:
        post_events(shoppers, items)
        wait_for_generation()
        code = f"import bench_hybrid_serving as b; b.keep_busy({args.busy})"
        busy = subprocess.Popen([sys.executable, "-c", code], cwd=HERE)
        for _ in range(args.runs):
            counts = candidate_counts()
            traffic = asyncio.run(paced(shop_plan(args, shoppers, trained, items), args.page_delay))
            every = _row(traffic, "trained", "unknown", "after event")
            pipeline = _row(traffic, "after event")
            print(
                f"busy {args.busy:.0%}: all pages p50 {every[0]:.2f} / p99 {every[2]:.2f} ms, "
                f"pages after an event p50 {pipeline[0]:.2f} / p99 {pipeline[2]:.2f} ms, "
                f"generated ahead {_served_ahead(counts):.1%}",
                flush=True,
            )
    finally:
        if busy is not None:
            busy.kill()
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)


def _share(value: float) -> str:
    return " | –" if math.isnan(value) else f" | {value:.1%}"


def write_report(
    http: dict[str, list[tuple[float, ...]]],
    stages: list[tuple[str, float, float]],
    args: argparse.Namespace,
) -> None:
    med = statistics.median
    labels = {
        "inline": "shopper with an event since training, candidates generated on the request",
        "ahead": "shopper with an event since training, candidates generated when it arrived",
        "precomputed": "trained user, nothing new: the list precomputed at training",
        "event": f"{args.event_rate:g} view events/s, each shopper's home page "
        f"{args.page_delay:g} s after their event",
        "shop": f"{args.shop_rate:g} home pages/s: the row above among pages of trained users "
        "and unknown visitors (10%), all pages",
        "shop-events": "… of which the pages after an event (the pipeline)",
    }
    head = (
        "| path | p50 | {} | p99 | in the server: ≤ 5 ms | ≤ 10 ms | {} | generated ahead | runs |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    closed = [head.format("p90", "requests"), rule]
    opened = [head.format("p95", "errors"), rule]
    floor = http.pop("floor")[0]
    late = med(r[0] for r in http.pop("late"))
    posts = http.pop("posts")
    busy = [r[0] for r in http.pop("busy")]
    for key, runs in http.items():
        kind, name = key.split(" ", 1)
        cells = " | ".join(f"{med(r[i] for r in runs):.2f} ms" for i in range(3))
        cells += "".join(_share(med(r[i] for r in runs)) for i in (6, 7))
        ahead = "–" if name == "precomputed" else f"{med(r[5] for r in runs):.1%}"
        if kind == "closed":
            total = f"{sum(r[4] for r in runs):,.0f}"
            closed.append(f"| {labels[name]} | {cells} | {total} | {ahead} | {len(runs)} |")
        else:
            errors = f"{sum(r[3] for r in runs):.0f} of {sum(r[4] for r in runs):,.0f}"
            opened.append(f"| {labels[name]} | {cells} | {errors} | {ahead} | {len(runs)} |")
    stage_rows = ["| stage | median | p99 |", "|---|---:|---:|"]
    for name, p50, p99 in stages:
        unit = "" if name.startswith("candidates") else " ms"
        stage_rows.append(f"| {name} | {p50:.2f}{unit} | {p99:.2f}{unit} |")
    trained_in = (WORK / "train_seconds").read_text() if (WORK / "train_seconds").exists() else "?"
    body = "\n".join(
        [
            f"Synthetic shop: {N_ITEMS:,} items, {N_USERS:,} users, {N_EVENTS:,} events, model "
            f"`hybrid` (`nextbuy train` took {float(trained_in) / 60:.0f} min, validation fit "
            "and the lists of every trained user included). Configuration, in `nextbuy.toml`:",
            "",
            "```toml",
            CONFIG.split("[training.params.hybrid]\n", 1)[1].strip(),
            "```",
            "",
            "Home placement, k=10, default rules, explanations on; server (`nextbuy serve`) "
            "pinned to core 0, load generator to core 1. Before measuring, one view event is "
            f"posted for each of {SHOPPERS:,} shoppers, whose home pages then run the pipeline "
            "on every request: candidate generation (unless the server generated the "
            "shopper's candidates when the event arrived), features, LightGBM, rules and "
            "reasons. The server runs twice: with `candidate_cache = 0` (every request "
            "generates), then with the default (events queue their shoppers for generation; "
            "measured once the queue is empty, and with events arriving during the run). "
            "Command: `python benchmarks/bench_hybrid_serving.py`.",
            "",
            machine_summary(),
            "",
            "Candidate generation and ranking (`OnlineRanker.score`: the shopper's rows, seven "
            "generators, merge, features, LightGBM), in-process on one core, 1,000 requests of "
            "shoppers with one new view each. When a shopper's event arrives the server runs "
            "everything up to the features' event half ahead of their request; the request "
            "then turns event times into ages at its own time, adds its context and runs "
            "LightGBM (then rules and reasons):",
            "",
            *stage_rows,
            "",
            f"Over HTTP, one connection, closed loop (wrk, {args.seconds} s per run). wrk "
            "corrects its percentiles for coordinated omission: for each request slower than "
            "the run's mean interval between requests it adds the samples that requests sent "
            "at that mean rate would have seen, so one 150 ms stall at ~1,000 requests/s weighs "
            "like ~150 slow requests (wrk's average times its request count exceeds the run's "
            "length). *In the server*: the share of the same "
            "pages its own histogram (`nextbuy_http_request_seconds`, from the request reaching "
            "the application to the end of its response) counts within 5 and within 10 ms:",
            "",
            *closed,
            "",
            f"Over HTTP, open loop ({args.seconds} s per run): requests arrive at random "
            f"(Poisson) at {args.rate:.0f} pages/s for the first two rows, then events at "
            f"{args.event_rate:g}/s, each followed by the shopper's page, alone and among "
            f"{args.shop_rate:g} pages/s (the serving benchmark's load). The server stores the "
            "events, generates candidates in the background and serves pages at once. A "
            "latency counts from the moment the Python client's timer fires (it fires up to "
            f"{late:.2f} ms late at the p99, not charged to the server) and includes any wait "
            "for a free connection. On this machine the client itself adds to every request: "
            f"/healthz answers in {floor[0]:.2f} ms (p50) under wrk and {floor[1]:.2f} ms "
            "under this client. Event POSTs during the shop load: "
            f"p50 {med(r[0] for r in posts):.2f} ms, p99 {med(r[1] for r in posts):.2f} ms. "
            "The server's process kept its core busy "
            f"{', '.join(f'{b:.0%}' for b in busy)} of the time during the shop load's runs "
            "(user and system CPU time from /proc over the run's length): the headroom left "
            "for a slower machine.",
            "",
            *opened,
        ]
    )
    write_section("hybrid-serving", "Serving the hybrid on the benchmark catalogue", body)


if __name__ == "__main__":
    main()
