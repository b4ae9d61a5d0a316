"""Administration (scope: admin): model versions, hot reloads, rules, API keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.schemas import KeyRequest
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Name = Annotated[str, Path(min_length=1, max_length=100)]


def _state(request: Request) -> ServingState:
    return request.app.state.serving


def _model_status(state: ServingState) -> dict[str, Any]:
    live = state.live
    model = None if live is None else live.model
    return {
        "model_version": None if model is None else model.version,
        "model": None if model is None else model.model_name,
        "loaded_in_seconds": None if model is None else round(model.load_seconds, 2),
        "registry_serving": state.registry.serving_state().get("version"),
        "last_load_error": state.last_load_error,
        "online_shoppers": len(state.online),
        "placements": sorted(state.placements),
    }


@router.get("/status")
async def status(request: Request) -> JSONResponse:
    """What is served, what the registry says should be, and the last load failure."""
    return JSONResponse(_model_status(_state(request)))


@router.post("/reload-model")
async def reload_model(request: Request) -> JSONResponse:
    """Load the registry's serving version now (else within seconds anyway) and swap."""
    state = _state(request)
    swapped = await run_in_threadpool(state.check_model)
    return JSONResponse({"swapped": swapped, **_model_status(state)})


@router.post("/reload-rules")
async def reload_rules(request: Request) -> JSONResponse:
    """Re-read the placements of nextbuy.toml (422 and no change if the file is invalid)."""
    placements = await run_in_threadpool(_state(request).reload_rules)
    return JSONResponse({"placements": {n: len(p.rules) for n, p in placements.items()}})


@router.get("/models")
async def models(request: Request) -> JSONResponse:
    """Every registered version with its validation metrics."""
    state = _state(request)
    serving = state.registry.serving_state().get("version")
    return JSONResponse(
        [
            {
                "version": v.name,
                "model": v.meta.get("model"),
                "trained_at": v.meta.get("trained_at"),
                "metrics": v.metrics,
                "serving": v.name == serving,
            }
            for v in state.registry.versions()
        ]
    )


@router.post("/models/{version}/promote")
async def promote(request: Request, version: Name) -> JSONResponse:
    """Put a version in service; the server swaps to it once it is loaded and validated."""
    state = _state(request)
    await run_in_threadpool(state.registry.promote, version, "promoted through the API")
    swapped = await run_in_threadpool(state.check_model)
    return JSONResponse({"swapped": swapped, **_model_status(state)})


@router.post("/models/rollback")
async def rollback(request: Request) -> JSONResponse:
    """Serve the version that was in service before the current one."""
    state = _state(request)
    previous = await run_in_threadpool(state.registry.rollback)
    swapped = await run_in_threadpool(state.check_model)
    return JSONResponse({"rolled_back_to": previous, "swapped": swapped})


@router.get("/keys")
async def list_keys(request: Request) -> JSONResponse:
    """Key ids, names and scopes (never the keys themselves)."""
    keys = await run_in_threadpool(_state(request).keys.list)
    return JSONResponse(
        [{"key_id": k.key_id, "name": k.name, "scopes": sorted(k.scopes)} for k in keys]
    )


@router.post("/keys", status_code=201)
async def create_key(request: Request, body: KeyRequest) -> JSONResponse:
    """A new key; the response is the only time its secret is shown."""
    key, secret = await run_in_threadpool(_state(request).keys.create, body.name, body.scopes)
    return JSONResponse(
        {"key_id": key.key_id, "name": key.name, "scopes": sorted(key.scopes), "key": secret},
        status_code=201,
    )


@router.delete("/keys/{key}", status_code=204)
async def revoke_key(request: Request, key: Name) -> Response:
    """Revoke keys by id or name."""
    await run_in_threadpool(_state(request).keys.revoke, key)
    return Response(status_code=204)
