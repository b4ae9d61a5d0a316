"""API key checks as route dependencies: 401 without a valid key, 403 without the scope.

With no key created yet the API is open (development mode); `nextbuy serve` then refuses
to listen anywhere but localhost. Keys travel as `X-API-Key: <key>` or
`Authorization: Bearer <key>`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from nextbuy.serving.keys import ApiKey

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token.")

Check = Callable[..., Awaitable[ApiKey | None]]


def require(scope: str) -> Check:
    """A dependency admitting keys with `scope` (admin keys pass every check)."""

    async def check(
        request: Request,
        header_key: str | None = Security(api_key_header),
        bearer_key: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> ApiKey | None:
        keys = request.app.state.serving.keys
        if not keys.any_keys():
            return None
        presented = header_key or (bearer_key.credentials if bearer_key else None)
        if not presented:
            raise HTTPException(
                401,
                "missing API key: send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = keys.verify(presented)
        if key is None:
            raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if not key.allows(scope):
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        return key

    return check
