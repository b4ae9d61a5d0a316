"""Run the API under uvicorn: one process, uvloop and httptools when installed."""

from __future__ import annotations

import importlib.util
import logging

import uvicorn
from threadpoolctl import threadpool_limits

from nextbuy.config import Settings
from nextbuy.errors import ConfigError
from nextbuy.server.app import create_app
from nextbuy.serving.keys import KeyStore

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
log = logging.getLogger("nextbuy.serving")


def check_host(host: str, development: bool) -> None:
    """Without API keys the API is open: refuse to listen beyond this machine."""
    if development and host not in LOCAL_HOSTS:
        raise ConfigError(
            f"no API key exists, so the API would be open to anyone on {host}: create one "
            "with `nextbuy keys create --scope read --name storefront`, or serve on 127.0.0.1"
        )


def run_server(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted (blocking)."""
    check_host(host, not KeyStore(settings.store_path).any_keys())
    # Requests multiply small matrices (a fold-in, a pool of a few hundred items), where
    # BLAS threads only add wake-up latency (measured: 2x), and one process shares its cores
    # with the event loop: one BLAS thread for the life of the server.
    threadpool_limits(1)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=5,
    )
