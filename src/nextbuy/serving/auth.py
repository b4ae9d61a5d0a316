"""API keys checked in one ASGI middleware: 401 without a valid key, 403 without the scope.

Which scope a request needs follows from its method and path alone: /healthz and /readyz
are open; /v1/admin/*, /v1/dashboard/* and the /dashboard pages need admin; PUT, DELETE and
POST /v1/events need write; everything else (recommendations, including POST cart and
rerank, /metrics, /docs) needs read. An admin key passes every check. On dashboard paths a
session cookie from the dashboard's log-in form stands in for the key (`sessions`), and a
page asked for without one redirects to that form. With no key created yet the API is open
(development mode); `nextbuy serve` then refuses to listen beyond localhost.

A middleware rather than a FastAPI dependency: resolving a dependency with its header
parameters costs ~0.3 ms per request, this a few microseconds.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from nextbuy.serving.keys import ApiKey, KeyStore
from nextbuy.serving.responses import problem

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
OPEN_PREFIXES = ("/dashboard/login", "/dashboard/static/")
ADMIN_PREFIXES = ("/v1/admin", "/v1/dashboard", "/dashboard")
CHALLENGE = {"WWW-Authenticate": "Bearer"}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}


class Sessions(Protocol):
    """Cookie sessions (nextbuy.dashboard.sessions): the key behind one, and where to log in."""

    def key_of(self, scope: Scope) -> ApiKey | None: ...

    def login_page(self, scope: Scope) -> ASGIApp | None: ...


def required_scope(method: str, path: str) -> str | None:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    if path.startswith(ADMIN_PREFIXES):
        return "admin"
    if method in ("PUT", "DELETE", "PATCH") or (method == "POST" and path == "/v1/events"):
        return "write"
    return "read"


def presented_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-api-key":
            return value.decode("latin-1").strip() or None
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyStore, sessions: Sessions | None = None) -> None:
        self.app = app
        self.keys = keys
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # CORS preflights carry no credentials
            return
        needed = required_scope(scope["method"], scope["path"])
        if needed is None or not self.keys.any_keys():
            await self.app(scope, receive, send)
            return
        presented = presented_key(scope)
        if presented is not None:
            key = self.keys.verify(presented)
            if key is None:
                await problem(401, "invalid API key", CHALLENGE)(scope, receive, send)
                return
        else:
            key = self.sessions.key_of(scope) if self.sessions is not None else None
            if key is None:
                login = self.sessions.login_page(scope) if self.sessions is not None else None
                detail = "missing API key: send it as X-API-Key or Authorization: Bearer"
                await (login or problem(401, detail, CHALLENGE))(scope, receive, send)
                return
        if not key.allows(needed):
            await problem(403, f"this API key lacks the {needed!r} scope")(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


def document_security(schema: dict[str, Any]) -> None:
    """Declare both ways of sending a key in the OpenAPI document."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
    for path in OPEN_PATHS:
        for operation in schema.get("paths", {}).get(path, {}).values():
            operation["security"] = []
