"""Experiments (scope: admin): create, list, start/pause/resume/stop, results."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Request
from starlette.concurrency import run_in_threadpool

from nextbuy.config.experiments import ExperimentConfig
from nextbuy.errors import NotFoundError
from nextbuy.experiments.registry import parse_experiment
from nextbuy.experiments.reporting import experiment_results
from nextbuy.serving.responses import JSONResponse, problem
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1/admin/experiments", tags=["experiments"])

Name = Annotated[str, Path(min_length=1, max_length=64)]
EXAMPLE = {
    "name": "home-ease-v2",
    "layer": "home",
    "variants": [
        {"name": "control"},
        {"name": "ease-v2", "model_version": "v0002"},
        {"name": "no-personalisation", "holdout": True, "weight": 0.1},
    ],
}


def _state(request: Request) -> ServingState:
    return request.app.state.serving


def _describe(state: ServingState, name: str) -> dict[str, Any]:
    for entry in state.experiments.describe():
        if entry["name"] == name:
            return entry
    raise NotFoundError(f"experiment {name!r} does not exist")


@router.get("")
async def list_experiments(request: Request) -> JSONResponse:
    """Every experiment (nextbuy.toml and created ones): status, whether it is serving (its
    model versions loaded), the current traffic weights and any problem."""
    state = _state(request)
    await run_in_threadpool(state.experiments.refresh, False)
    return JSONResponse(state.experiments.describe())


@router.post("", status_code=201)
async def create_experiment(
    request: Request, body: Annotated[dict[str, Any], Body(examples=[EXAMPLE])]
) -> JSONResponse:
    """A new experiment (a draft unless `status` says running). Variants are pipeline
    configurations: `model_version`, `placement_overrides` (placement -> k/candidates/rules),
    `holdout` (non-personalised), `shadow` (computed and logged, never shown); `weight` is
    the traffic split. 409 if the name is taken, 422 if it is invalid or its layer is full."""
    state = _state(request)
    experiment = parse_experiment(body)
    if any(e.name == experiment.name for e in state.experiments.registry.all()):
        return problem(409, f"experiment {experiment.name!r} already exists")
    runtime = state.experiments
    await run_in_threadpool(
        runtime.prepare if experiment.status == "running" else runtime.check, experiment
    )
    await run_in_threadpool(state.experiments.registry.create, experiment)
    await run_in_threadpool(state.experiments.refresh)
    return JSONResponse(_describe(state, experiment.name), status_code=201)


@router.post("/{name}/{action}")
async def change_experiment(
    request: Request, name: Name, action: Literal["start", "pause", "resume", "stop"]
) -> JSONResponse:
    """Start (loads the model versions it names first), pause, resume or stop. A stopped
    experiment is final: start a new one with a new name to test again."""
    state = _state(request)
    runtime = state.experiments
    experiment: ExperimentConfig = await run_in_threadpool(runtime.registry.get, name)
    if action in ("start", "resume"):
        await run_in_threadpool(runtime.prepare, experiment)
    await run_in_threadpool(runtime.registry.change, name, action)
    await run_in_threadpool(runtime.refresh)
    return JSONResponse(_describe(state, name))


@router.get("/{name}/results")
async def results(request: Request, name: Name) -> JSONResponse:
    """The analysis: per variant impressions, CTR, add-to-cart rate, conversion, revenue per
    visitor and AOV with CIs, lifts and p-values (always-valid ones decide significance),
    SRM, power, lift over time, traffic split, segments, shadow lists, position bias."""
    state = _state(request)
    await run_in_threadpool(state.exposures.flush)
    settings = state.settings
    found = await run_in_threadpool(
        lambda: experiment_results(
            settings.store_path,
            name,
            configured=state.experiments.registry.configured,
            view_through_hours=settings.attribution.view_through_hours,
        )
    )
    return JSONResponse(found.to_json())
