"""The web server: the serving API and the dashboard on one FastAPI app (`create_app`),
run under uvicorn in one process (`run_server`). It sits above both, so neither imports the
other's assembly."""

from nextbuy.server.app import create_app
from nextbuy.server.run import check_host, run_server

__all__ = ["check_host", "create_app", "run_server"]
