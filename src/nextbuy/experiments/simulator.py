"""A simulated shop that runs experiments against the real service over HTTP.

Customers come from ``SyntheticShop``, so each one's true taste is known: ``true_affinity``
gives the probability that their next purchase is each item. A visit asks the running
server for the customer's home-page list, examines position k with probability θ_k (the
position bias, ``theta``), clicks an examined item with probability
``1 - exp(-click_scale · affinity · n_items)`` (so an item as likely as average is clicked
``click_scale`` of the time), puts a share of the clicked items in the cart and buys a share
of those, and now and then buys an item straight from their taste without any list
(an organic purchase; when it was recommended recently it is view-through). Events are
sent to ``POST /v1/events`` with the list's ``recommendation_id``.

A share of the customers (``new_user_share``) has no history in the store, so the
experiments see new and returning visitors, as a shop does.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from nextbuy.config import Settings, load_settings
from nextbuy.datasets.synthetic import SyntheticShop
from nextbuy.experiments import stats
from nextbuy.experiments.analysis import analyse
from nextbuy.experiments.assignment import buckets
from nextbuy.experiments.attribution import Attribution
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.store import open_store
from nextbuy.store.outcomes import open_outcome_reader
from nextbuy.store.registry import ModelRegistry
from nextbuy.training import train_version

SERVER_START_SECONDS = 120.0


@dataclass(frozen=True)
class ShopSpec:
    """Size of the simulated shop and its history."""

    n_users: int = 2_000
    n_items: int = 500
    n_categories: int = 10
    n_brands: int = 20
    history_events: int = 60_000
    new_user_share: float = 0.15
    seed: int = 0


@dataclass(frozen=True)
class Behaviour:
    """How simulated customers react to a list (see the module docstring)."""

    theta: tuple[float, ...] = tuple(1.0 / k**0.7 for k in range(1, 11))
    click_scale: float = 0.02
    cart_rate: float = 0.3
    purchase_rate: float = 0.5
    organic_purchase_rate: float = 0.1
    k: int = 10


CONFIG = """\
data_dir = "nextbuy-data"

[training]
model = "ease"
# The planted taste makes customers buy what they bought before as readily as anything
# else, so lists must not leave seen items out.
exclude_seen = false

[attribution]
view_through_hours = 24.0
bandit_refresh_seconds = {bandit_refresh}
"""


@dataclass
class SimulatedShop:
    """A project folder with a filled store, trained versions, and the shop's planted truth."""

    root: Path
    settings: Settings
    shop: SyntheticShop
    spec: ShopSpec
    new_users: frozenset[str]
    versions: dict[str, str] = field(default_factory=dict)  # role -> model version
    _attraction: np.ndarray | None = None

    def attraction(self, behaviour: Behaviour) -> np.ndarray:
        """P(click | examined) per user and item, from the planted purchase affinity."""
        if self._attraction is None:
            affinity = self.shop.true_affinity(self.shop.user_ids, "purchase")
            scaled = affinity * self.shop.n_items * behaviour.click_scale
            self._attraction = -np.expm1(-scaled)
        return self._attraction


def build_shop(
    root: Path,
    spec: ShopSpec = ShopSpec(),
    models: dict[str, tuple[str, dict[str, Any]]] | None = None,
    bandit_refresh_seconds: float = 2.0,
) -> SimulatedShop:
    """Write nextbuy.toml, import the shop (minus the new users' history) and train one
    version per role (default: "good" = EASE, "degraded" = popularity); the first serves."""
    models = models or {"good": ("ease", {"reg": 500.0}), "degraded": ("popularity", {})}
    root.mkdir(parents=True, exist_ok=True)
    (root / "nextbuy.toml").write_text(
        CONFIG.format(bandit_refresh=bandit_refresh_seconds), encoding="utf-8"
    )
    settings = load_settings(root / "nextbuy.toml")
    shop = SyntheticShop(
        n_users=spec.n_users,
        n_items=spec.n_items,
        n_categories=spec.n_categories,
        n_brands=spec.n_brands,
        seed=spec.seed,
    )
    rng = np.random.default_rng([spec.seed, 7])
    new = frozenset(rng.choice(shop.user_ids, int(spec.n_users * spec.new_user_share), False))
    data = shop.shop_data(spec.history_events)
    history = data.interactions[~data.interactions["user_id"].isin(new)]
    store = open_store(settings.store_path)
    versions = {}
    try:
        for kind, frame in (
            ("items", data.items),
            ("users", data.users),
            ("interactions", history),
        ):
            import_frame(store, settings, frame, f"simulator:{kind}", ImportOptions(kind))
        for role, (model, params) in models.items():
            versions[role] = train_version(settings, store, model, params).version.name
    finally:
        store.close()
    ModelRegistry(settings.models_dir).promote(next(iter(versions.values())), "simulation")
    return SimulatedShop(root, settings, shop, spec, new, versions)


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`nextbuy serve` in a subprocess of the project folder, on a free local port."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = project / f"serve-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = SERVER_START_SECONDS) -> ServerProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nextbuy.cli", "serve", "--port", str(self.port)],
                cwd=self.project,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGINT, as Ctrl-C: the server flushes its exposure log before it exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- admin calls --------------------------------------------------------------------------


def create_experiment(url: str, config: dict[str, Any]) -> dict[str, Any]:
    """Create and start an experiment through the admin API; waits until it serves."""
    with httpx.Client(base_url=url, timeout=120) as client:
        created = client.post("/v1/admin/experiments", json={**config, "status": "draft"})
        created.raise_for_status()
        started = client.post(f"/v1/admin/experiments/{config['name']}/start")
        started.raise_for_status()
        body = started.json()
        if not body["active"]:
            raise RuntimeError(f"experiment {config['name']} is not serving: {body['problem']}")
        return body


def stop_experiment(url: str, name: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post(f"/v1/admin/experiments/{name}/stop").raise_for_status()


def results(url: str, name: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=300) as client:
        response = client.get(f"/v1/admin/experiments/{name}/results")
        response.raise_for_status()
        return response.json()


# -- traffic ------------------------------------------------------------------------------


@dataclass
class TrafficReport:
    visits: int
    seconds: float
    clicks: int
    purchases: int
    variants: dict[str, int]  # lists served per variant, as the responses said

    @property
    def visits_per_second(self) -> float:
        return self.visits / self.seconds if self.seconds else float("nan")


class Visitors:
    """Simulated customers visiting the home page of a running server."""

    def __init__(self, sim: SimulatedShop, behaviour: Behaviour = Behaviour()) -> None:
        self.sim = sim
        self.behaviour = behaviour
        self.attraction = sim.attraction(behaviour)
        shop = sim.shop
        self.user_row = {u: i for i, u in enumerate(shop.user_ids)}
        self.item_col = {str(i): j for j, i in enumerate(shop.item_ids)}
        self.price = np.asarray(shop.items()["price"], dtype=np.float64)
        self.affinity_cdf = np.cumsum(shop.true_affinity(shop.user_ids, "purchase"), axis=1)
        self._local = threading.local()

    def _client(self, url: str) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None or str(client.base_url).rstrip("/") != url:
            client = self._local.client = httpx.Client(base_url=url, timeout=60)
        return client

    def visit(self, url: str, user: str, rng: np.random.Generator) -> tuple[str | None, int, int]:
        """One visit: (variant served, clicks, purchases)."""
        b = self.behaviour
        client = self._client(url)
        response = client.get(f"/v1/users/{user}/recommendations", params={"k": b.k})
        response.raise_for_status()
        body = response.json()
        row = self.user_row[user]
        events = self._reactions(body, row, rng)
        organic = rng.random() < b.organic_purchase_rate
        if organic:
            item = int(
                np.searchsorted(self.affinity_cdf[row], rng.random() * self.affinity_cdf[row, -1])
            )
            events.append(self._purchase(user, item, None))
        if events:
            client.post("/v1/events", json={"events": events}).raise_for_status()
        clicks = sum(e["event_type"] == "click" for e in events)
        bought = sum(e["event_type"] == "purchase" for e in events)
        return body.get("variant"), clicks, bought

    def _reactions(self, body: dict, row: int, rng: np.random.Generator) -> list[dict]:
        b = self.behaviour
        user, rec_id = body["user_id"], body["recommendation_id"]
        events: list[dict] = []
        for entry in body["items"]:
            position = entry["position"]
            theta = b.theta[min(position, len(b.theta)) - 1]
            item = self.item_col[entry["item_id"]]
            if rng.random() >= theta or rng.random() >= self.attraction[row, item]:
                continue
            events.append(_event(user, entry["item_id"], "click", rec_id))
            if rng.random() < b.cart_rate:
                events.append(_event(user, entry["item_id"], "add_to_cart", rec_id))
                if rng.random() < b.purchase_rate:
                    events.append(self._purchase(user, item, rec_id))
        return events

    def _purchase(self, user: str, item: int, rec_id: str | None) -> dict:
        event = _event(user, str(self.sim.shop.item_ids[item]), "purchase", rec_id)
        event |= {"value": round(float(self.price[item]), 2), "quantity": 1,
                  "order_id": f"o-{uuid.uuid4().hex[:16]}"}  # fmt: skip
        return event

    def run(self, url: str, users: Sequence[str], workers: int = 8, seed: int = 0) -> TrafficReport:
        """Visit ``users`` in order (one visit each, repeat ids for more) from ``workers``
        threads; every visit has its own seeded generator, so outcomes do not depend on
        thread timing beyond what the server answers."""
        started = time.perf_counter()
        variants: dict[str, int] = {}
        clicks = bought = 0
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(self.visit, url, user, np.random.default_rng([seed, i]))
                for i, user in enumerate(users)
            ]
            for future in futures:
                variant, c, p = future.result()
                variants[str(variant)] = variants.get(str(variant), 0) + 1
                clicks += c
                bought += p
        return TrafficReport(len(users), time.perf_counter() - started, clicks, bought, variants)


def _event(user: str, item: str, kind: str, rec_id: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"user_id": user, "item_id": item, "event_type": kind}
    if rec_id is not None:
        event["recommendation_id"] = rec_id
    return event


def visit_schedule(sim: SimulatedShop, visits_per_user: float, seed: int) -> list[str]:
    """Users in a random order, each about ``visits_per_user`` times (at least once)."""
    rng = np.random.default_rng([sim.spec.seed, 11, seed])
    users = np.asarray(sim.shop.user_ids, dtype=object)
    extra = rng.poisson(max(visits_per_user - 1, 0), len(users))
    order = np.repeat(users, 1 + extra)
    rng.shuffle(order)
    return [str(u) for u in order]


def rounds(schedule: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    """The schedule cut into ``n`` consecutive parts (bandit rounds)."""
    edges = np.linspace(0, len(schedule), n + 1).astype(int)
    for lo, hi in itertools.pairwise(edges):
        yield schedule[lo:hi]


# -- A/A re-randomisation -----------------------------------------------------------------


def aa_resplits(
    units: pd.DataFrame,
    n_splits: int = 500,
    alpha: float = 0.05,
    metrics: Sequence[str] = ("ctr", "conversion", "revenue_per_visitor"),
    seed: int = 0,
) -> pd.DataFrame:
    """A/A tests by re-randomising logged units into two halves with ``n_splits`` salts.

    Every unit was served the same logic, so any difference between the halves is chance:
    the share of splits called significant is the false-positive rate. Units are
    re-assigned with the same salted hash as live traffic (``assignment.buckets``). One
    row per split and metric: p_value (fixed horizon), p_value_always_valid, significant.
    """
    per_unit = units.groupby("unit_id", as_index=False)[
        ["impressions", "clicks", "add_to_carts", "orders", "revenue"]
    ].sum()
    ids = per_unit["unit_id"].astype(str).tolist()
    rows = []
    for split in range(n_splits):
        arm = np.where(buckets(f"aa-resplit:{seed}:{split}", ids) < 0.5, "a", "b")
        result = analyse(per_unit.assign(variant=arm), {"a": 1, "b": 1}, alpha, control="a")
        found = result.metrics[result.metrics["variant"] == "b"].set_index("metric")
        for metric in metrics:
            rows.append(
                {
                    "split": split,
                    "metric": metric,
                    "p_value": float(found.at[metric, "p_value"]),
                    "p_value_always_valid": float(found.at[metric, "p_value_always_valid"]),
                    "srm_p": result.srm.p_value if result.srm else float("nan"),
                }
            )
    frame = pd.DataFrame(rows)
    frame["significant"] = frame["p_value"] < alpha
    frame["significant_always_valid"] = frame["p_value_always_valid"] < alpha
    return frame


def false_positive_rates(resplits: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per metric: splits, false-positive rate (fixed-horizon and always-valid p) with a
    Wilson interval, and the share of SRM alarms."""
    rows = []
    for metric, group in resplits.groupby("metric", sort=False):
        n = len(group)
        fixed = stats.proportion_ci(float(group["significant"].sum()), n, alpha)
        rows.append(
            {
                "metric": metric,
                "splits": n,
                "false_positive_rate": fixed.value,
                "ci_low": fixed.ci_low,
                "ci_high": fixed.ci_high,
                "false_positive_rate_always_valid": float(group["significant_always_valid"].mean()),
                "srm_alarms": float((group["srm_p"] < 0.001).mean()),
            }
        )
    return pd.DataFrame(rows)


def peeking_false_positive_rates(
    data: Attribution,
    n_splits: int = 200,
    looks: int = 10,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """What watching an A/A test costs: the share of re-randomised splits whose CTR is
    called significant at any of ``looks`` evenly spaced looks, by the fixed-horizon
    p-value and by the always-valid one (tuned to the final size, fixed in advance)."""
    cuts = np.linspace(data.lists["served_at"].min(), data.lists["served_at"].max(), looks + 1)
    frames = [_unit_totals(data.until(cut).per_unit()) for cut in cuts[1:]]
    ids = frames[-1]["unit_id"].tolist()
    horizon = len(ids) // 2
    arms = {
        split: dict(zip(ids, buckets(f"aa-peek:{seed}:{split}", ids) < 0.5, strict=True))
        for split in range(n_splits)
    }
    fixed = np.zeros(n_splits, bool)
    valid = np.zeros(n_splits, bool)
    for frame in frames:
        clicks = frame["clicks"].to_numpy()
        shown = frame["impressions"].to_numpy()
        for split in range(n_splits):
            in_b = frame["unit_id"].map(arms[split]).to_numpy(bool)
            p_fixed, p_valid = _ctr_pvalues(clicks, shown, in_b, horizon, alpha)
            fixed[split] |= p_fixed < alpha
            valid[split] |= p_valid < alpha
    return {
        "splits": n_splits,
        "looks": looks,
        "any_look_fixed_horizon": float(fixed.mean()),
        "any_look_always_valid": float(valid.mean()),
    }


def _unit_totals(units: pd.DataFrame) -> pd.DataFrame:
    return units.groupby("unit_id", as_index=False)[["clicks", "impressions"]].sum()


def _ctr_pvalues(
    clicks: np.ndarray, shown: np.ndarray, in_b: np.ndarray, horizon: int, alpha: float
) -> tuple[float, float]:
    """Fixed-horizon and always-valid p-values of CTR(b) - CTR(a), delta method per unit."""
    est_b = stats.ratio_ci(clicks[in_b], shown[in_b], alpha)
    est_a = stats.ratio_ci(clicks[~in_b], shown[~in_b], alpha)
    test = stats.difference_test(est_b, est_a, alpha)
    variance = est_a.variance + est_b.variance
    n_b, n_a = int(in_b.sum()), int((~in_b).sum())
    n_eff = n_a * n_b / (n_a + n_b)
    # as analysis.analyse: the mixture is tuned to the variance at the planned size
    tau2 = stats.mixture_variance(variance * n_eff / (horizon / 2), alpha)
    p_valid = float(stats.always_valid_pvalue(est_b.value - est_a.value, variance, tau2))
    return test.p_value, p_valid


def expected_clicks(
    sim: SimulatedShop, behaviour: Behaviour, store_path: Path, experiment: str
) -> pd.Series:
    """The planted truth per variant: mean expected clicks per shown list,
    Σ_k θ_k · P(click | examined), from the logged lists and the customers' true taste."""
    logged = open_outcome_reader(store_path).logged_positions(experiment)
    attraction = sim.attraction(behaviour)
    rows = sim.shop.user_index(logged["user_id"].to_numpy())
    cols = pd.Index(sim.shop.item_ids.astype(str)).get_indexer(logged["item_id"])
    theta = np.asarray(behaviour.theta)
    examined = theta[np.minimum(logged["position"].to_numpy(), len(theta)) - 1]
    logged["expected"] = examined * attraction[rows, cols]
    per_list = logged.groupby(["variant", "recommendation_id"])["expected"].sum()
    return per_list.groupby("variant").mean()
