"""JSON responses through orjson: several times faster than the standard encoder on our bodies."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse as StarletteJSONResponse

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class JSONResponse(StarletteJSONResponse):
    # A subclass of Starlette's JSON response, so that FastAPI documents the route's
    # response model in /docs instead of "string".

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=OPTIONS)


def problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error body in FastAPI's shape: {"detail": ...}."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)
