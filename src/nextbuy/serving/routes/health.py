"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.state import ServingState

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is alive (no key needed)."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """A model is loaded and requests can be answered (no key needed); 503 until then."""
    state: ServingState = request.app.state.serving
    live = state.live
    if live is None:
        return JSONResponse({"status": "loading"}, 503)
    return JSONResponse({"status": "ready", "model_version": live.model.version})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency per route, events per type, model version,
    cold-start fallbacks."""
    state: ServingState = request.app.state.serving
    body, content_type = state.metrics.exposition()
    return Response(body, media_type=content_type)
