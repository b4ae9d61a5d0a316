"""Serving: the REST API (FastAPI app, routes), model hot swap, online state, API keys.

`create_app(settings)` builds the app; `nextbuy serve` runs it under uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from nextbuy.config import Settings


def create_app(settings: Settings, **options: Any) -> FastAPI:
    from nextbuy.serving.app import create_app as build

    return build(settings, **options)


__all__ = ["create_app"]
