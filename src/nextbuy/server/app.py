"""The FastAPI application: `create_app(settings)` builds a fresh app and its state.

Nothing is created at import time; every app owns its state (store connection, model,
metrics registry), so tests can run several apps in one process.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from nextbuy import __version__
from nextbuy.config import Settings
from nextbuy.dashboard import attach as attach_dashboard
from nextbuy.serving.auth import AuthMiddleware, document_security
from nextbuy.serving.errors import install_error_handlers
from nextbuy.serving.events import EventBatch, EventIn
from nextbuy.serving.fastpath import FastPathMiddleware
from nextbuy.serving.limits import BodyLimitMiddleware
from nextbuy.serving.metrics import MetricsMiddleware
from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.routes import (
    admin,
    catalog,
    events,
    experiments,
    health,
    recommendations,
    users,
)
from nextbuy.serving.state import ServingState

DESCRIPTION = """\
Personalised recommendations for every placement, real-time events, business rules.

Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>` (create keys with
`nextbuy keys create`). Scopes: **read** (recommendations), **write** (events, items,
users), **admin** (models, rules, keys, experiments). Without any key the server runs in
development mode: open, and only on localhost.
"""


# Prometheus at /metrics is the telemetry; FastAPI versions with native OpenTelemetry ask on
# every request whether it is configured (~30 µs).
NO_OPENTELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings, *, start_background: bool = True) -> FastAPI:
    """A new app serving `settings`' project; the model loads in the background at start-up."""
    state = ServingState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_background:
            state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPI(
        title="nextbuy",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=JSONResponse,
        lifespan=lifespan,
        **NO_OPENTELEMETRY,
    )
    app.state.serving = state
    app.state.settings = settings
    for router in (
        health.router,
        recommendations.router,
        events.router,
        catalog.router,
        users.router,
        admin.router,
        experiments.router,
    ):
        app.include_router(router)
    dashboard_sessions = attach_dashboard(app, state)
    install_error_handlers(app)
    app.add_middleware(FastPathMiddleware, routes=recommendations.router.routes)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.serving.max_body_bytes)
    app.add_middleware(AuthMiddleware, keys=state.keys, sessions=dashboard_sessions)
    # outside the key check, so a browser can read a 401 too
    if settings.serving.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serving.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    _document_event_bodies(app)
    return app


def _document_event_bodies(app: FastAPI) -> None:
    """Security schemes, and the two body shapes POST /v1/events (parsed by hand) takes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        document_security(schema)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (EventIn, EventBatch):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
