"""The one place that turns errors into HTTP answers; bodies never carry internal details."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextbuy.errors import (
    ConfigError,
    DataError,
    NextbuyError,
    NotFittedError,
    NotFoundError,
    StoreError,
)
from nextbuy.serving.limits import BodyTooLarge
from nextbuy.serving.responses import problem

log = logging.getLogger("nextbuy.serving")

# Most specific first: the first class an error is an instance of decides the status.
STATUS_OF: tuple[tuple[type[NextbuyError], int], ...] = (
    (NotFoundError, 404),
    (DataError, 422),
    (ConfigError, 422),
    (NotFittedError, 503),
    (StoreError, 503),
    (NextbuyError, 400),
)


class Unavailable(NextbuyError):
    """The server cannot answer yet (no model loaded)."""


def status_of(exc: NextbuyError) -> int:
    if isinstance(exc, Unavailable):
        return 503
    return next(status for cls, status in STATUS_OF if isinstance(exc, cls))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NextbuyError, _nextbuy_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(Exception, _internal_error)


async def _nextbuy_error(request: Request, exc: NextbuyError) -> Response:
    status = status_of(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(status, str(exc))


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    # FastAPI's field-level shape, without echoing the (possibly large) input back
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return problem(422, errors)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return problem(exc.status_code, exc.detail, getattr(exc, "headers", None))


async def _too_large(request: Request, exc: Exception) -> Response:
    max_bytes = request.app.state.settings.serving.max_body_bytes
    return problem(413, f"request body larger than {max_bytes:,} bytes", {"Connection": "close"})


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal server error")
