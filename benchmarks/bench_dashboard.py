"""Dashboard load time with a million events in the store.

The store holds the bundled Online Retail sample twice (the copy a year later, with customers,
orders and event ids of its own): 1,083,812 events. A `nextbuy serve` process is timed on
- the very first view ever (the events index and the aggregate are built then),
- every page afterwards, after a short traffic run: the HTML, its JSON endpoint, and the
  whole page in Chromium until every chart is drawn (when Playwright and Chromium exist),
- the first view after a restart (the saved aggregate is read and only checked).
Usage: python benchmarks/bench_dashboard.py [--runs 5] [--rebuild]
Writes the "dashboard" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import machine_summary, markdown_table, write_section
from nextbuy.config import load_settings
from nextbuy.dashboard.traffic import simulate_traffic
from nextbuy.datasets import load_sample_shop
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.store import open_store
from nextbuy.training import train_version
from serving_helpers import Server

WORK = Path(__file__).resolve().parent / ".work" / "dashboard"
PAGES = ("", "business", "quality", "experiments", "data", "explore")
ENDPOINT = {"": "overview", "explore": "explore/search"}
CHROMIUM = "/usr/bin/chromium"
CONFIG = """\
data_dir = "nextbuy-data"

[events.custom]
cancellation = 0.0
stock_adjustment = 0.0

[training]
model = "itemknn"
"""


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build(rebuild: bool) -> int:
    """The project with the sample twice; returns the number of events."""
    if rebuild:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "nextbuy.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_settings(WORK / "nextbuy.toml")
    store = open_store(settings.store_path)
    try:
        if store.count_events() < 1_000_000:
            shop = load_sample_shop()
            # a second cohort a year later: same catalogue, customers of their own
            first = shop.interactions
            later = first.assign(
                timestamp=first["timestamp"] + pd.Timedelta(days=365),
                event_id=first["event_id"] + "-later",
                user_id=first["user_id"] + "-later",
                session_id=first["session_id"] + "-later",
                order_id=first["order_id"] + "-later",
            )
            sources = (("items", shop.items), ("users", shop.users))
            sources += (("interactions", shop.interactions), ("interactions", later))
            for n, (kind, frame) in enumerate(sources):
                log(f"importing {len(frame):,} {kind}")
                import_frame(store, settings, frame, f"bench:{n}:{kind}", ImportOptions(kind))
        if not settings.models_dir.exists():
            log("training item kNN")
            train_version(settings, store, "itemknn", {})
        return store.count_events()
    finally:
        store.close()


def timed_get(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    client.get(path).raise_for_status()
    return time.perf_counter() - started


def browser_loads(url: str, runs: int) -> dict[str, float]:
    """Median seconds from navigation to every chart drawn, per page (empty without Chromium)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {}
    if not Path(CHROMIUM).exists():
        return {}
    out = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        for name in PAGES:
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                page.goto(f"{url}/dashboard/{name}".rstrip("/"))
                page.wait_for_selector("body[data-ready='1']")
                if name == "explore":
                    page.wait_for_selector(".rec-list")
                times.append(time.perf_counter() - started)
            out[name or "overview"] = statistics.median(times)
        browser.close()
    return out


def measure(runs: int, rebuild: bool) -> dict[str, Any]:
    events = build(rebuild)
    # as on a store the dashboard has never seen: no saved aggregate, no events(ts) index
    shutil.rmtree(WORK / "nextbuy-data" / "dashboard", ignore_errors=True)
    with closing(sqlite3.connect(WORK / "nextbuy-data" / "nextbuy.db")) as conn:
        conn.execute("DROP INDEX IF EXISTS events_ts")
    results: dict[str, Any] = {"events": events, "load_before": os.getloadavg()[0]}
    server = Server(WORK).start(timeout=300)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            results["first_view"] = timed_get(client, "/v1/dashboard/overview")
            found = client.get("/v1/dashboard/explore/search").json()["users"]
            users = [u["user_id"] for u in found]
            log("short traffic run")
            simulate_traffic(client, users[:20])
            # the background thread picks the traffic up within seconds; asking times it
            refreshed = client.post("/v1/dashboard/refresh").json()["figures"]
            rows = []
            for name in PAGES:
                html = statistics.median(
                    timed_get(client, f"/dashboard/{name}".rstrip("/")) for _ in range(runs)
                )
                endpoint = f"/v1/dashboard/{ENDPOINT.get(name, name)}"
                data = statistics.median(timed_get(client, endpoint) for _ in range(runs))
                rows.append({"page": name or "overview", "html_s": html, "json_s": data})
            results["figures"] = refreshed
            results["rows"] = rows
            results["browser"] = browser_loads(server.url, max(1, runs // 2))
    finally:
        server.stop()
    server = Server(WORK).start(timeout=300)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            results["after_restart"] = timed_get(client, "/v1/dashboard/overview")
    finally:
        server.stop()
    results["load_after"] = os.getloadavg()[0]
    return results


def render(results: dict[str, Any], runs: int) -> str:
    rows = pd.DataFrame(results["rows"])
    browser = results["browser"]
    rows["browser_s"] = rows["page"].map(browser) if browser else float("nan")
    figures = results["figures"]
    table = markdown_table(
        rows.rename(
            columns={
                "html_s": "HTML s",
                "json_s": "JSON s",
                "browser_s": "whole page in Chromium s",
            }
        ),
        {"HTML s": ".3f", "JSON s": ".3f", "whole page in Chromium s": ".2f"},
    )
    return (
        f"Store: the bundled sample twice, {results['events']:,} events (SQLite). Server: "
        "`nextbuy serve`, item kNN. Command: `python benchmarks/bench_dashboard.py`.\n\n"
        f"{machine_summary()} Load average before and after (other work on the machine "
        f"counts here): {results['load_before']:.1f}, {results['load_after']:.1f}.\n\n"
        f"Per page after a short traffic run, medians of {runs} requests (HTML and JSON over "
        "HTTP from the same machine) and of "
        f"{max(1, runs // 2)} loads in headless Chromium until every chart is drawn:\n\n"
        f"{table}\n\n"
        f"- First view ever (creates the `events(ts)` index and scans every event once): "
        f"{results['first_view']:.2f} s.\n"
        f"- First view after a restart (the saved aggregate is read and checked): "
        f"{results['after_restart']:.3f} s.\n"
        f"- Refresh after the traffic run: events aggregate "
        f"{figures['events']['seconds']:.3f} s (the new rows through the index, and the "
        "count check that runs every minute or after an import), model-quality figures "
        f"{figures['figures']['seconds']:.3f} s, business metrics "
        f"{figures['business']['seconds']:.3f} s, experiments "
        f"{figures['experiments']['seconds']:.3f} s; each waits at least 10× its own "
        "duration before running again.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    results = measure(args.runs, args.rebuild)
    body = render(results, args.runs)
    print(body)
    write_section("dashboard", "Dashboard load time with a million events", body)


if __name__ == "__main__":
    main()
