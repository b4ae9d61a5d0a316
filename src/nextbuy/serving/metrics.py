"""Prometheus metrics of one app, in a registry of its own (two apps in a process never mix)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Most requests take about a millisecond; the buckets resolve the 10 ms objective.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nextbuy_http_requests",
            "HTTP requests by route template, method and status code.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "nextbuy_http_request_seconds",
            "Time from request to the end of the response, by route template.",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "nextbuy_events_ingested",
            "Events stored through the API, by event type.",
            ("event_type",),
            registry=self.registry,
        )
        self.cold_start = Counter(
            "nextbuy_cold_start_fallbacks",
            "Recommendation answers given without a personal history, by fallback.",
            ("fallback",),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "nextbuy_model_info",
            "The model version in service (value 1).",
            ("version", "model"),
            registry=self.registry,
        )
        self.model_loads = Counter(
            "nextbuy_model_loads",
            "Model versions loaded, by outcome (swapped, rejected, failed).",
            ("outcome",),
            registry=self.registry,
        )
        self.online_shoppers = Gauge(
            "nextbuy_online_shoppers",
            "Users and sessions with events since training held in memory.",
            registry=self.registry,
        )
        self.candidate_sets = Counter(
            "nextbuy_candidate_sets",
            "Hybrid candidate sets: generated_ahead (on an event), ranked_ahead (a request "
            "found them), generated_inline (a request generated them).",
            ("outcome",),
            registry=self.registry,
        )
        self.candidate_queue = Gauge(
            "nextbuy_candidate_queue",
            "Shoppers waiting for their candidates to be generated after an event.",
            registry=self.registry,
        )

    def set_model(self, version: str, model: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version, model).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every request by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label, so scanning bots cannot blow up the series.
            template = getattr(route, "path", "unmatched")
            method = scope["method"]
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)
            self.metrics.requests.labels(template, method, str(status)).inc()
