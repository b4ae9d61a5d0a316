"""The `nextbuy` command: one module per command group, all on one Typer app.

Each command imports the stages it runs when it runs, so `nextbuy --help` and the quick
commands start in well under a second instead of loading the server, the trainer and the
evaluator first (this layer is the top one: nothing imports it, so these imports hide no
cycle).
"""

# isort: off
# the order of these imports is the order of the commands in `nextbuy --help`
from nextbuy.cli import data, models, evaluate, serve, experiments, demo  # noqa: F401
from nextbuy.cli.common import app

# isort: on


def main() -> None:
    app()


__all__ = ["app", "main"]
