"""Dashboard log-in: an admin key typed once into a form becomes a session cookie.

The browser never holds the key itself: the form posts it, the server checks it and answers
with an HttpOnly, SameSite=Strict cookie carrying a random session token. The token maps to
the key's id in memory only, so a restart logs everyone out, and a revoked key ends its
sessions at once (the key is looked up again on every request). The cookie is honoured on
dashboard paths only, so it can never drive the admin API's writes.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Scope

from nextbuy.serving.keys import ApiKey, KeyStore

COOKIE = "nextbuy_dashboard"
SESSION_SECONDS = 12 * 3600
PAGE_PREFIX = "/dashboard"
API_PREFIX = "/v1/dashboard"
LOGIN_PATH = "/dashboard/login"


@dataclass(frozen=True)
class Session:
    key_id: str
    expires_at: float


def cookie_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:
                return None  # a malformed cookie header is no session
            morsel = jar.get(COOKIE)
            if morsel is not None and morsel.value:
                return morsel.value
    return None


def on_dashboard(path: str) -> bool:
    return path.startswith((PAGE_PREFIX, API_PREFIX))


class DashboardSessions:
    """Session tokens of logged-in dashboard users (what AuthMiddleware asks about cookies)."""

    def __init__(self, keys: KeyStore, lifetime_seconds: float = SESSION_SECONDS) -> None:
        self.keys = keys
        self.lifetime = lifetime_seconds
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, key: ApiKey) -> str:
        """A new session token for an admin key."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._drop_expired()
            self._sessions[token] = Session(key.key_id, time.time() + self.lifetime)
        return token

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(token, None)

    def key_of(self, scope: Scope) -> ApiKey | None:
        """The key behind the request's session cookie, on dashboard paths only."""
        if not on_dashboard(scope["path"]):
            return None
        token = cookie_token(scope)
        session = self._sessions.get(token) if token else None
        if session is None or session.expires_at < time.time():
            return None
        return self.keys.get(session.key_id)

    def login_page(self, scope: Scope) -> ASGIApp | None:
        """A browser asking for a dashboard page without a session goes to the log-in form."""
        path = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PAGE_PREFIX):
            return None
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(path)}", status_code=303)

    def _drop_expired(self) -> None:
        now = time.time()
        for token in [t for t, s in self._sessions.items() if s.expires_at < now]:
            del self._sessions[token]
