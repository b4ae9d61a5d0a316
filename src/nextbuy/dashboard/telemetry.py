"""Request rates, errors and latency percentiles from the server's own Prometheus metrics.

The counters and histograms are cumulative since start; a sampler keeps one snapshot every
SAMPLE_SECONDS in a ring buffer, so the Overview can chart rates and percentiles per
interval (from bucket differences) over the last hour without timing requests twice.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from nextbuy.serving.metrics import LATENCY_BUCKETS, Metrics

SAMPLE_SECONDS = 10.0
KEEP_SAMPLES = 360  # an hour
MIN_OPEN_SECONDS = 1.0
QUANTILES = (0.5, 0.95, 0.99)
PERSONAL_ROUTES = (
    "/v1/users/{user_id}/recommendations",
    "/v1/sessions/{session_id}/recommendations",
)


def counted(route: str) -> bool:
    """Traffic the Overview reports: the storefront's /v1 routes, not administration or
    the dashboard's own requests (an operator's clicks are not the shop's health)."""
    return route.startswith("/v1/") and not route.startswith(("/v1/dashboard", "/v1/admin"))


@dataclass
class Snapshot:
    """Cumulative totals at one moment."""

    at: float
    requests: int = 0
    server_errors: int = 0
    client_errors: int = 0
    buckets: list[float] = field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS) + 1))
    by_route: dict[str, dict[str, float]] = field(default_factory=dict)
    cold_start: dict[str, float] = field(default_factory=dict)
    events: dict[str, float] = field(default_factory=dict)


def snapshot(metrics: Metrics) -> Snapshot:
    """Read the registry once: requests by route and status, latency buckets, fallbacks."""
    out = Snapshot(at=time.time())
    route_buckets: dict[str, list[float]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "nextbuy_http_requests_total":
                _add_request(out, labels["route"], int(labels["status"]), sample.value)
            elif sample.name == "nextbuy_http_request_seconds_bucket" and counted(labels["route"]):
                bounds = route_buckets.setdefault(labels["route"], [0.0] * len(out.buckets))
                index = _bucket_index(labels["le"])
                bounds[index] += sample.value
            elif sample.name == "nextbuy_cold_start_fallbacks_total":
                out.cold_start[labels["fallback"]] = sample.value
            elif sample.name == "nextbuy_events_ingested_total":
                out.events[labels["event_type"]] = sample.value
    for route, bounds in route_buckets.items():
        out.buckets = [a + b for a, b in zip(out.buckets, bounds, strict=True)]
        stats = out.by_route.setdefault(route, _route_stats())
        for q in QUANTILES:
            stats[f"p{round(q * 100)}_ms"] = quantile(bounds, q) * 1000
    return out


def _route_stats() -> dict[str, float]:
    return {"requests": 0.0, "server_errors": 0.0, "client_errors": 0.0}


def _add_request(out: Snapshot, route: str, status: int, value: float) -> None:
    if not counted(route):
        return
    stats = out.by_route.setdefault(route, _route_stats())
    stats["requests"] += value
    out.requests += int(value)
    if status >= 500:
        stats["server_errors"] += value
        out.server_errors += int(value)
    elif status >= 400:
        stats["client_errors"] += value
        out.client_errors += int(value)


def _bucket_index(le: str) -> int:
    if le == "+Inf":
        return len(LATENCY_BUCKETS)
    return LATENCY_BUCKETS.index(float(le))


def quantile(cumulative: list[float], q: float) -> float:
    """Seconds at quantile q of cumulative bucket counts, interpolated inside the bucket
    (as Prometheus' histogram_quantile does); NaN without observations."""
    total = cumulative[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip((*LATENCY_BUCKETS, math.inf), cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return LATENCY_BUCKETS[-1]  # beyond the last bucket: its bound is all we know
            width = count - lower_count
            share = (rank - lower_count) / width if width > 0 else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return LATENCY_BUCKETS[-1]


@dataclass(frozen=True)
class Interval:
    """What happened between two snapshots."""

    at: float
    seconds: float
    requests: int
    server_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def interval(before: Snapshot, after: Snapshot) -> Interval:
    buckets = [b - a for a, b in zip(before.buckets, after.buckets, strict=True)]
    p50, p95, p99 = (quantile(buckets, q) * 1000 for q in QUANTILES)
    return Interval(
        at=after.at,
        seconds=max(after.at - before.at, 1e-9),
        requests=after.requests - before.requests,
        server_errors=after.server_errors - before.server_errors,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )


class Sampler:
    """A ring buffer of snapshots, one every SAMPLE_SECONDS (taken by the dashboard's thread)."""

    def __init__(self, metrics: Metrics, keep: int = KEEP_SAMPLES) -> None:
        self.metrics = metrics
        self.started = time.time()
        self._samples: deque[Snapshot] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._samples.append(Snapshot(at=self.started))  # the zero point: nothing counted yet

    def sample(self) -> Snapshot:
        taken = snapshot(self.metrics)
        with self._lock:
            self._samples.append(taken)
        return taken

    def due(self) -> bool:
        with self._lock:
            return time.time() - self._samples[-1].at >= SAMPLE_SECONDS

    def intervals(self, now: Snapshot) -> list[Interval]:
        """Each sampled interval, and the one from the last sample to `now` unless it is
        too short to say anything yet."""
        with self._lock:
            points = list(self._samples)
        if now.at - points[-1].at >= MIN_OPEN_SECONDS:
            points.append(now)
        return [interval(a, b) for a, b in itertools.pairwise(points) if b.at > a.at]
