"""Dashboard routes: HTML pages at /dashboard/..., their data as JSON at /v1/dashboard/...

The pages are plain HTML shells; each page's script fetches its JSON endpoint and draws the
charts with the Chart.js build shipped in static/ (nothing is loaded from the network).
The JSON endpoints carry response models, so /docs documents them for anyone who wants
the same numbers in their own BI tool. Scope: admin (see nextbuy.serving.auth); a browser
logs in once with the form at /dashboard/login.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse as StarletteJSON

from nextbuy.dashboard import explore, views
from nextbuy.dashboard.schemas import (
    Business,
    Data,
    Experiments,
    ItemView,
    Overview,
    Quality,
    Refreshed,
    Suggestions,
    UserView,
)
from nextbuy.dashboard.service import Dashboard
from nextbuy.dashboard.sessions import COOKIE, cookie_token
from nextbuy.serving.responses import OPTIONS


class JSONResponse(StarletteJSON):
    """orjson, like the serving API; a JSONResponse subclass so /docs shows the models."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=OPTIONS)


HERE = Path(__file__).parent
STATIC = HERE / "static"
STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".md": "text/markdown",
    ".svg": "image/svg+xml",
}
PAGES = {
    "overview": "Overview",
    "business": "Business impact",
    "quality": "Model quality",
    "experiments": "Experiments",
    "data": "Data",
    "explore": "Explore",
}
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"])
)

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/v1/dashboard", tags=["dashboard"], default_response_class=JSONResponse)
Id = Annotated[str, PathParam(min_length=1, max_length=256)]


def dashboard_of(request: Request) -> Dashboard:
    return request.app.state.dashboard


def _render(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    state = request.app.state.serving
    html = TEMPLATES.get_template(f"{name}.html").render(
        pages=PAGES,
        page=name,
        protected=state.keys.any_keys(),
        **values,
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


# -- pages --------------------------------------------------------------------------------------
@pages.get("/dashboard")
async def home(request: Request) -> HTMLResponse:
    dashboard_of(request).ensure_running()
    return _render(request, "overview", title=PAGES["overview"])


@pages.get("/dashboard/static/{name}")
async def static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return Response("not found", status_code=404)
    media = STATIC_TYPES.get(path.suffix, "application/octet-stream")
    return Response(
        path.read_bytes(), media_type=media, headers={"Cache-Control": "public, max-age=3600"}
    )


@pages.get("/dashboard/login")
async def login_form(request: Request, next: str = "/dashboard") -> Response:
    if not request.app.state.serving.keys.any_keys():
        return RedirectResponse(_safe_next(next), status_code=303)  # development mode: open
    return _render(request, "login", title="Log in", next=_safe_next(next), error=None)


@pages.post("/dashboard/login")
async def login(request: Request) -> Response:
    """Check an admin key from the form; answer with a session cookie, never the key."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key_text = (form.get("key") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/dashboard"])[0])
    keys = request.app.state.serving.keys
    key = keys.verify(key_text) if key_text else None
    if key is None or not key.allows("admin"):
        error = "that is not an admin API key" if key is not None else "unknown API key"
        return _render(request, "login", status=401, title="Log in", next=target, error=error)
    token = dashboard_of(request).sessions.open(key)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(dashboard_of(request).sessions.lifetime),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@pages.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    dashboard_of(request).sessions.close(cookie_token(request.scope))
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@pages.get("/dashboard/{page}")
async def page(request: Request, page: str) -> Response:
    if page == "overview":
        return RedirectResponse("/dashboard", status_code=307)
    if page not in PAGES:
        return _render(request, "missing", status=404, title="Not found")
    dashboard_of(request).ensure_running()
    return _render(request, page, title=PAGES[page])


def _safe_next(target: str) -> str:
    """Only back into the dashboard: a log-in link must not redirect anywhere else."""
    if target.startswith("/dashboard") and not target.startswith("/dashboard/login"):
        return target
    return "/dashboard"


# -- JSON ---------------------------------------------------------------------------------------
async def _ready(request: Request) -> Dashboard:
    dash = dashboard_of(request)
    if dash.events.counts.covered_until is None:
        await run_in_threadpool(dash.wait_ready)  # only the very first view ever waits
    else:
        dash.ensure_running()
    return dash


@api.get("/overview", response_model=Overview)
async def overview(request: Request) -> JSONResponse:
    """Requests, errors and latency percentiles (since start and per interval), events per
    type over time, and the model version in service."""
    dash = await _ready(request)
    return JSONResponse(await run_in_threadpool(views.overview, dash))


@api.get("/quality", response_model=Quality)
async def model_quality(request: Request) -> JSONResponse:
    """Validation metrics of every trained version, the latest offline evaluation, catalogue
    coverage, diversity, popularity bias, cold-start share and drift by category."""
    dash = await _ready(request)
    return JSONResponse(await run_in_threadpool(views.model_quality, dash))


@api.get("/business", response_model=Business)
async def business(request: Request) -> JSONResponse:
    """CTR, add-to-cart and purchase rates of recommendations, attributed revenue and revenue
    per thousand impressions, by placement, by position and per day (last 30 days)."""
    dash = await _ready(request)
    return JSONResponse(await run_in_threadpool(views.business, dash))


@api.get("/experiments", response_model=Experiments)
async def experiments(request: Request) -> JSONResponse:
    """Each experiment's variants, live results with confidence intervals, lift over time and
    traffic allocation over time."""
    dash = await _ready(request)
    return JSONResponse(await run_in_threadpool(views.experiments, dash))


@api.get("/data", response_model=Data)
async def data(request: Request) -> JSONResponse:
    """The data audit, freshness (last event per type), gaps and recent imports."""
    dash = await _ready(request)
    return JSONResponse(await run_in_threadpool(views.data, dash))


@api.post("/refresh", response_model=Refreshed)
async def refresh(request: Request, audit: bool = False) -> JSONResponse:
    """Recompute every cached figure now instead of within seconds (`audit=true`: the data
    audit too, which reads every event)."""
    dash = dashboard_of(request)
    await run_in_threadpool(dash.refresh, audit)
    return JSONResponse({"figures": dash.status()})


@api.get("/explore/search", response_model=Suggestions)
async def search(request: Request, q: Annotated[str, Query(max_length=256)] = "") -> JSONResponse:
    """Customers whose id starts with `q` (most active first) and items whose id or title
    contains it (most popular first)."""
    state = request.app.state.serving
    live = state.current()
    return JSONResponse(
        {"users": explore.search_users(live, q), "items": explore.search_items(live, q)}
    )


@api.get("/explore/users/{user_id}", response_model=UserView)
async def explore_user(request: Request, user_id: Id) -> JSONResponse:
    """A customer's history and their list on every placement, with scores and reasons."""
    state = request.app.state.serving
    body = await run_in_threadpool(explore.user_view, state, state.current(), user_id)
    return JSONResponse(body)


@api.get("/explore/items/{item_id}", response_model=ItemView)
async def explore_item(request: Request, item_id: Id) -> JSONResponse:
    """An item, its similar items and what is bought with it, with reasons."""
    state = request.app.state.serving
    body = await run_in_threadpool(explore.item_view, state, state.current(), item_id)
    return JSONResponse(body)
