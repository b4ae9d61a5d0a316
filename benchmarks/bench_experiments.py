"""Experiments end to end: a simulated shop against a real `nextbuy serve` over HTTP.

Customers of a synthetic shop with a planted taste (2,000 users × 500 items, 200k past
events; 15% of the customers have no history) visit the home page, examine position k with
probability θ_k = k^-0.7, click with their true affinity, buy a share of the clicks and now
and then buy straight from their taste (view-through when it was recommended). Runs:

1. A/B: the serving EASE model against a deliberately degraded variant (popularity); the
   analysis must detect it (lift with its CI, always-valid p-value), and the planted truth
   (expected clicks per list) is shown beside the measured lift.
2. A/A: two A/A tests over HTTP (identical arms), then ≥ 200 A/A tests by re-randomising
   their logged units with new salts (the A/A null exactly: every unit got the same logic),
   giving the false-positive rate at alpha with a Wilson interval; and the rate when the test
   is looked at 10 times, with fixed-horizon and with always-valid p-values.
3. Position bias: lists served in random order (a `shuffle` arm) estimate θ; the estimate
   from ranked lists is shown too (confounded by relevance).
4. Bandit: Thompson sampling between the same two arms, allocations recomputed by the server
   every 2 s; the share of traffic per arm over time.
5. The request-path cost of the exposure log and of assignment (micro-benchmarks).

Usage: python benchmarks/bench_experiments.py [--users 2000] [--visits 4000] [--resplits 250]
Writes the "experiments" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_summary, markdown_table, write_section
from nextbuy.experiments.attribution import attribute
from nextbuy.experiments.click_reports import click_logs, fit_position_bias
from nextbuy.experiments.simulator import (
    Behaviour,
    ServerProcess,
    ShopSpec,
    SimulatedShop,
    Visitors,
    aa_resplits,
    build_shop,
    create_experiment,
    expected_clicks,
    false_positive_rates,
    peeking_false_positive_rates,
    results,
    rounds,
    visit_schedule,
)

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "experiments"
WORKERS = 8
SNAPSHOT = "store-as-built.db"
ALPHA = 0.05


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def schedule(sim: SimulatedShop, visits: int, seed: int) -> list[str]:
    """About ``visits`` visits spread over every customer."""
    per_user = max(visits / sim.spec.n_users, 1.0)
    return visit_schedule(sim, per_user, seed)[:visits]


# -- 1. A/B ----------------------------------------------------------------------------------
@contextmanager
def fresh_server(sim: SimulatedShop) -> Iterator[str]:
    """A server on the shop as built: the store restored from its snapshot, so no run's
    clicks, purchases (which the home page then leaves out) or online state reach the next."""
    store = sim.settings.store_path
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    shutil.copy(WORK / SNAPSHOT, store)
    with ServerProcess(sim.root) as server:
        yield server.url


def run_ab(sim: SimulatedShop, visitors: Visitors, visits: int) -> dict[str, Any]:
    config = {
        "name": "ab-good-vs-degraded",
        "layer": "ab",
        # planned for ~1,000 units per arm: the always-valid test is tuned to that size
        "min_detectable_effect": 0.3,
        "variants": [
            {"name": "good"},
            {"name": "degraded", "model_version": sim.versions["degraded"]},
        ],
    }
    path = sim.settings.store_path
    with fresh_server(sim) as url:
        create_experiment(url, config)
        traffic = visitors.run(url, schedule(sim, visits, seed=1), WORKERS, seed=1)
        found = results(url, config["name"])  # also writes every list served so far
        truth = expected_clicks(sim, visitors.behaviour, path, config["name"])
        ranked, _ = fit_position_bias(click_logs(path, experiment=config["name"]), "all")
    log(f"A/B: {traffic.visits} visits in {traffic.seconds:.0f} s")
    return {"traffic": traffic, "results": found, "truth": truth, "ranked": ranked.examination}


# -- 2. A/A ----------------------------------------------------------------------------------
def run_aa(sim: SimulatedShop, visitors: Visitors, visits: int, runs: int) -> list[dict]:
    path, hours = sim.settings.store_path, sim.settings.attribution.view_through_hours
    out = []
    for run in range(runs):
        name = f"aa-{run + 1}"
        config = {"name": name, "layer": "aa", "variants": [{"name": "a"}, {"name": "b"}]}
        with fresh_server(sim) as url:
            create_experiment(url, config)
            seed = 10 + run
            traffic = visitors.run(url, schedule(sim, visits, seed=seed), WORKERS, seed=seed)
            found = results(url, name)
            data = attribute(path, name, hours)
        log(f"A/A {name}: {traffic.visits} visits in {traffic.seconds:.0f} s")
        out.append({"name": name, "traffic": traffic, "results": found, "data": data})
    return out


def aa_offline(runs: list[dict[str, Any]], splits: int) -> dict[str, Any]:
    """Re-randomise the A/A runs' units (prefixed per run, so each is its own unit)."""
    data = {run["name"]: run["data"] for run in runs}
    names = list(data)
    units = pd.concat(
        [
            d.per_unit().assign(unit_id=lambda f, n=n: n + "/" + f["unit_id"])
            for n, d in data.items()
        ],
        ignore_index=True,
    )
    started = time.perf_counter()
    resplits = aa_resplits(units, n_splits=splits, alpha=ALPHA)
    rates = false_positive_rates(resplits, ALPHA)
    peeking = peeking_false_positive_rates(data[names[0]], n_splits=200, looks=10, alpha=ALPHA)
    log(
        f"A/A offline: {splits} re-splits of {units['unit_id'].nunique()} units "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return {"rates": rates, "peeking": peeking, "units": units["unit_id"].nunique()}


# -- 3. position bias -------------------------------------------------------------------------
def run_position_bias(sim: SimulatedShop, visitors: Visitors, visits: int) -> np.ndarray:
    name = "position-bias"
    config = {"name": name, "layer": "pb", "variants": [{"name": "shuffled", "shuffle": True}]}
    with fresh_server(sim) as url:
        create_experiment(url, config)
        traffic = visitors.run(url, schedule(sim, visits, seed=20), WORKERS, seed=20)
        results(url, name)  # writes every list served so far
        shuffled, _ = fit_position_bias(click_logs(sim.settings.store_path, shuffled=True))
    log(f"position bias: {traffic.visits} shuffled lists in {traffic.seconds:.0f} s")
    return shuffled.examination


# -- 4. bandit -------------------------------------------------------------------------------
def run_bandit(
    sim: SimulatedShop, visitors: Visitors, visits: int, n_rounds: int
) -> dict[str, Any]:
    name = "bandit"
    config = {
        "name": name,
        "layer": "bandit",
        "allocation": "thompson",
        "bandit_metric": "ctr",
        "exploration_floor": 0.05,
        "variants": [
            {"name": "good"},
            {"name": "degraded", "model_version": sim.versions["degraded"]},
        ],
    }
    timeline = []
    plan = schedule(sim, visits, seed=30)
    with fresh_server(sim) as url, httpx.Client(base_url=url, timeout=60) as admin:
        create_experiment(url, config)
        started = time.perf_counter()
        for index, part in enumerate(rounds(plan, n_rounds)):
            traffic = visitors.run(url, part, WORKERS, seed=1000 + index)
            listed = {e["name"]: e for e in admin.get("/v1/admin/experiments").json()}
            served = sum(traffic.variants.values())
            timeline.append(
                {
                    "round": index + 1,
                    "elapsed_s": time.perf_counter() - started,
                    "visits": served,
                    "share_good": traffic.variants.get("good", 0) / served,
                    "allocation_good_after": listed[name]["allocation_weights"]["good"],
                }
            )
        found = results(url, name)
        truth = expected_clicks(sim, visitors.behaviour, sim.settings.store_path, name)
    log(f"bandit: {visits} visits in {time.perf_counter() - started:.0f} s")
    return {"timeline": pd.DataFrame(timeline), "results": found, "truth": truth}


# -- 5. request-path cost ---------------------------------------------------------------------
def request_path_costs() -> dict[str, float]:
    """Per-call cost of what a request adds: queueing its list for the log, and assignment."""
    from nextbuy.experiments.registry import parse_experiment
    from nextbuy.serving.assigner import CompiledAssigner
    from nextbuy.serving.exposures import Arm, ExposureLog
    from nextbuy.store import open_store

    folder = Path(tempfile.mkdtemp())
    try:
        open_store(folder / "x.db").close()
        exposures = ExposureLog(folder / "x.db")
        n = 100_000
        bodies = [
            {
                "recommendation_id": f"r{i}",
                "placement": "home",
                "user_id": f"u{i % 5000}",
                "model_version": "v0001",
                "items": [{"item_id": f"i{j}", "score": 0.5, "position": j + 1} for j in range(10)],
            }
            for i in range(n)
        ]
        arms = (Arm("e", "a", "u:1"),)
        # batches of 1,000 (a busy server's 0.1 s between flushes), the queue emptied
        # between them untimed: per-call cost at the queue length a server really sees
        batch_ns = []
        for start in range(0, n, 1_000):
            started = time.perf_counter_ns()
            for body in bodies[start : start + 1_000]:
                exposures.record(body, None, "for_user", arms)
            batch_ns.append((time.perf_counter_ns() - started) / 1_000)
            exposures._pending.clear()
        record_ns = float(np.median(batch_ns))
        for body in bodies:
            exposures.record(body, None, "for_user", arms)
        started = time.perf_counter()
        exposures.flush()
        flush_rate = n / (time.perf_counter() - started)
        running = [
            parse_experiment(
                {
                    "name": f"e{i}",
                    "layer": f"l{i}",
                    "status": "running",
                    "variants": [{"name": "a"}, {"name": "b"}],
                }
            )
            for i in range(2)
        ]
        assigner = CompiledAssigner(running)
        started = time.perf_counter_ns()
        for i in range(20_000):
            assigner.assign(f"user{i}", None)
        assign_ns = (time.perf_counter_ns() - started) / 20_000
        return {
            "record_us": record_ns / 1000,
            "flush_lists_per_s": flush_rate,
            "assign_2_layers_us": assign_ns / 1000,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the report ------------------------------------------------------------------------------
def variant_rows(found: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for v in found["variants"]:
        rows.append(
            {
                "variant": v["variant"],
                "units": int(v["units"]),
                "lists": int(v["impressions"]),
                "CTR": v["ctr"],
                "CTR lift": _interval(
                    v.get("ctr_lift"), v.get("ctr_lift_ci_low"), v.get("ctr_lift_ci_high")
                ),
                "p": _p(v.get("ctr_p_value")),
                "always-valid p": _p(v.get("ctr_p_value_always_valid")),
                "conversion": v["conversion"],
                "conv. lift": _interval(
                    v.get("conversion_lift"),
                    v.get("conversion_lift_ci_low"),
                    v.get("conversion_lift_ci_high"),
                ),
                "rev/visitor": v["revenue_per_visitor"],
                "RPV lift": _interval(
                    v.get("revenue_per_visitor_lift"),
                    v.get("revenue_per_visitor_lift_ci_low"),
                    v.get("revenue_per_visitor_lift_ci_high"),
                ),
            }
        )
    return pd.DataFrame(rows)


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "control"
    return f"{value:+.1%} [{low:+.1%}, {high:+.1%}]"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def render(
    sim: SimulatedShop,
    behaviour: Behaviour,
    ab: dict,
    aa: list[dict],
    offline: dict,
    bias: dict,
    bandit: dict,
    costs: dict,
    seconds: float,
) -> str:
    found = ab["results"]
    truth = ab["truth"]
    degraded = next(v for v in found["variants"] if v["variant"] == "degraded")
    detected = degraded["ctr_p_value_always_valid"] < ALPHA and degraded["ctr_lift_ci_high"] < 0
    true_lift = truth["degraded"] / truth["good"] - 1
    srm = found["srm"]
    lines = [
        "Script: `benchmarks/bench_experiments.py` (a simulated shop against a real "
        "`nextbuy serve` subprocess over HTTP; simulator in `nextbuy.experiments.simulator`).",
        f"{machine_summary()} Whole run: {seconds / 60:.1f} min.",
        "",
        f"Shop: {sim.spec.n_users:,} customers × {sim.spec.n_items} items, "
        f"{sim.spec.history_events:,} past events, {sim.spec.new_user_share:.0%} of the "
        "customers without history. Behaviour: position k examined with θ_k = k^-0.7, "
        f"P(click | examined) = 1 − exp(−{behaviour.click_scale}·affinity·n_items), "
        f"{behaviour.cart_rate:.0%} of clicks carted, {behaviour.purchase_rate:.0%} of carts "
        f"bought, {behaviour.organic_purchase_rate:.0%} of visits also buy from their taste "
        "(view-through when recommended). Impressions are lists; "
        f"view-through window {sim.settings.attribution.view_through_hours:g} h; "
        f"{WORKERS} concurrent visitors. Every run starts from the shop as built (store "
        "restored, a new server), so no run's clicks and purchases shape the next one's lists.",
        "",
        "### 1. A/B: good (EASE, serving) against degraded (popularity)",
        "",
        f"{ab['traffic'].visits:,} visits in {ab['traffic'].seconds:.0f} s "
        f"({ab['traffic'].visits_per_second:.0f} visits/s, each a GET of the list and, when "
        "anything happened, a POST of its events).",
        "",
        markdown_table(
            variant_rows(found), {"CTR": ".4f", "conversion": ".2%", "rev/visitor": ".2f"}
        ),
        "",
        f"**{'Detected' if detected else 'NOT detected'}**: CTR lift of degraded "
        f"{degraded['ctr_lift']:+.1%} (95% CI {degraded['ctr_lift_ci_low']:+.1%} to "
        f"{degraded['ctr_lift_ci_high']:+.1%}), always-valid p = "
        f"{degraded['ctr_p_value_always_valid']:.2g}. Planted truth: expected clicks per list "
        f"{truth['good']:.3f} (good) vs {truth['degraded']:.3f} (degraded), a true lift of "
        f"{true_lift:+.1%}. SRM check: p = {srm['p_value']:.2f} "
        f"({'mismatch' if srm['mismatch'] else 'no mismatch'}). Significance is judged on "
        "always-valid p-values (mSPRT, `stats.PEEKING_METHOD`), since results can be read "
        "at any time.",
        "",
        "### 2. A/A: false-positive rate",
        "",
    ]
    for run in aa:
        b = next(v for v in run["results"]["variants"] if v["variant"] == "b")
        lines.append(
            f"- HTTP A/A `{run['name']}` ({run['traffic'].visits:,} visits): CTR lift "
            f"{_interval(b['ctr_lift'], b['ctr_lift_ci_low'], b['ctr_lift_ci_high'])}, "
            f"p = {b['ctr_p_value']:.2f}, always-valid p = {b['ctr_p_value_always_valid']:.2f}, "
            f"SRM p = {run['results']['srm']['p_value']:.2f}."
        )
    rates = offline["rates"].rename(
        columns={
            "false_positive_rate": "FPR (fixed p)",
            "ci_low": "95% CI low",
            "ci_high": "95% CI high",
            "false_positive_rate_always_valid": "FPR (always-valid p)",
            "srm_alarms": "SRM alarms",
        }
    )
    peek = offline["peeking"]
    lines += [
        "",
        f"Running hundreds of full HTTP simulations would take hours, so the A/A tests are "
        f"made from the logged data of the HTTP A/A runs ({offline['units']:,} units with real "
        "exposures and outcomes): each split re-randomises every unit into two arms with a new "
        "salt through the same salted hash as live traffic. All units were served the same "
        "logic, so each split is exactly an A/A test. Test: per-unit delta method (CTR), "
        f"two-proportion z (conversion), Welch t (revenue per visitor); alpha = {ALPHA}.",
        "",
        markdown_table(
            rates,
            {
                "FPR (fixed p)": ".3f",
                "95% CI low": ".3f",
                "95% CI high": ".3f",
                "FPR (always-valid p)": ".3f",
                "SRM alarms": ".3f",
            },
        ),
        "",
        f"Peeking: looking at an A/A test {peek['looks']} times and stopping at the first "
        f"p < {ALPHA} calls {peek['any_look_fixed_horizon']:.1%} of {peek['splits']} splits "
        f"significant with fixed-horizon p-values, {peek['any_look_always_valid']:.1%} with "
        "the always-valid ones (CTR; tuned to the final size).",
        "",
        "### 3. Position bias",
        "",
        "θ_k relative to position 1 (EM on the position-based model). From lists served in "
        "random order (a `shuffle` arm, the unconfounded intervention) and, for contrast, "
        "from the ranked lists of the A/B test, where relevant items sit on top.",
        "",
        markdown_table(
            _bias_table(behaviour, bias),
            dict.fromkeys(("true θ", "shuffled lists", "ranked lists"), ".3f"),
        ),
        "",
        "### 4. Bandit: Thompson sampling with a 5% floor per arm",
        "",
        f"Same arms as the A/B test, allocations recomputed by the server every "
        f"{sim.settings.attribution.bandit_refresh_seconds:g} s from attributed clicks "
        "(per list); share of visits served by each arm in successive rounds:",
        "",
        markdown_table(
            bandit["timeline"],
            {"elapsed_s": ".0f", "share_good": ".1%", "allocation_good_after": ".3f"},
        ),
        "",
        _bandit_summary(bandit),
        "",
        "### 5. Request-path cost",
        "",
        f"Queueing a served list for the exposure log (`ExposureLog.record`, a deque append): "
        f"{costs['record_us']:.2f} µs per list. The background writer stores "
        f"{costs['flush_lists_per_s']:,.0f} lists/s (10 items each) and flushes every "
        f"{sim.settings.attribution.exposure_flush_seconds:g} s and at shutdown; the window a "
        "hard kill can lose is one flush interval. Assignment in two layers (the plan's "
        "compiled `assign_all`: two salted SHA-256 and a bisection per layer): "
        f"{costs['assign_2_layers_us']:.1f} µs per request.",
    ]
    return "\n".join(lines)


def _bandit_summary(bandit: dict[str, Any]) -> str:
    timeline, truth = bandit["timeline"], bandit["truth"]
    overall = (timeline["share_good"] * timeline["visits"]).sum() / timeline["visits"].sum()
    final = timeline["share_good"].iloc[-1]
    return (
        f"The good arm served {timeline['share_good'].iloc[0]:.0%} of the first round's "
        f"visits, {final:.0%} of the last round's and {overall:.0%} overall; the degraded arm "
        f"kept its exploration floor. Planted truth in this run: {truth['good']:.3f} expected "
        f"clicks per list for good, {truth['degraded']:.3f} for degraded."
    )


def _bias_table(behaviour: Behaviour, bias: dict) -> pd.DataFrame:
    n = len(behaviour.theta)
    return pd.DataFrame(
        {
            "position": np.arange(1, n + 1),
            "true θ": np.asarray(behaviour.theta) / behaviour.theta[0],
            "shuffled lists": _pad(bias["shuffled"], n),
            "ranked lists": _pad(bias["ranked"], n),
        }
    )


def _pad(values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    out[: min(n, len(values))] = values[:n]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--visits", type=int, default=4_000, help="visits of the A/B test")
    parser.add_argument("--aa-visits", type=int, default=1_200, help="visits per HTTP A/A run")
    parser.add_argument("--aa-runs", type=int, default=2)
    parser.add_argument("--resplits", type=int, default=250)
    parser.add_argument("--bias-visits", type=int, default=1_200)
    parser.add_argument("--bandit-visits", type=int, default=3_000)
    parser.add_argument("--bandit-rounds", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    spec = ShopSpec(n_users=args.users, history_events=args.history)
    models = {"good": ("ease", {"reg": 1000.0}), "degraded": ("popularity", {})}
    sim = build_shop(WORK, spec, models, bandit_refresh_seconds=2.0)
    log(f"shop built: versions {sim.versions}")
    behaviour = Behaviour()
    visitors = Visitors(sim, behaviour)
    shutil.copy(sim.settings.store_path, WORK / SNAPSHOT)
    ab = run_ab(sim, visitors, args.visits)
    aa = run_aa(sim, visitors, args.aa_visits, args.aa_runs)
    bias = {"shuffled": run_position_bias(sim, visitors, args.bias_visits), "ranked": ab["ranked"]}
    bandit = run_bandit(sim, visitors, args.bandit_visits, args.bandit_rounds)
    offline = aa_offline(aa, args.resplits)
    costs = request_path_costs()
    seconds = time.perf_counter() - started
    body = render(sim, behaviour, ab, aa, offline, bias, bandit, costs, seconds)
    print(body)
    write_section(
        "experiments", "Experiments: A/B, A/A, position bias, bandit (simulated shop)", body
    )
    (WORK / "results.json").write_text(
        json.dumps({"ab": ab["results"], "bandit": bandit["results"]}, default=str)
    )


if __name__ == "__main__":
    main()
