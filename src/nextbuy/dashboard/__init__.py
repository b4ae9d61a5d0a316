"""The monitoring dashboard: pages at /dashboard, chart data at /v1/dashboard (scope: admin).

`attach(app, state)` adds the routes and the dashboard's state to a serving app and returns
the cookie sessions the auth middleware honours on dashboard paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nextbuy.dashboard.routes import api, pages
from nextbuy.dashboard.service import Dashboard

if TYPE_CHECKING:
    from fastapi import FastAPI

    from nextbuy.dashboard.sessions import DashboardSessions
    from nextbuy.serving.state import ServingState


def attach(app: FastAPI, state: ServingState) -> DashboardSessions:
    """Routes and state of the dashboard on `app`; its background work starts on first view."""
    dashboard = Dashboard(state)
    app.state.dashboard = dashboard
    app.include_router(pages)
    app.include_router(api)
    return dashboard.sessions
