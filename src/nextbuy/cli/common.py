"""What every command shares: the Typer app, the consoles, the config option, one-line
errors for what a user can cause, and the step spinner."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    Progress,
    TextColumn,
)

from nextbuy.config import CONFIG_FILENAME, Settings, load_settings
from nextbuy.errors import NextbuyError

app = typer.Typer(
    help="nextbuy: learn what each customer buys next, evaluate it honestly, serve it fast.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help=f"Path to {CONFIG_FILENAME} (default: nearest one)."),
]


def user_errors(func: F) -> F:
    """Turn errors a user can cause into one line on stderr and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NextbuyError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            # the signal may land after a step committed (an import's final checkpoint, say)
            err_console.print("interrupted: a step that had not finished kept nothing")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def settings_for(config: Path | None) -> Settings:
    return load_settings(config)


def with_steps(work: Callable[[Callable[[str], None]], Any]) -> Any:
    """Run `work`, showing each step it announces under a spinner with elapsed time."""
    from rich.progress import SpinnerColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        return work(lambda text: progress.update(task, description=text))


def number(value: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def positive_events(settings: Settings) -> tuple[Any, Any]:
    """Dated events of known users whose type counts as interest, and the catalogue (or None):
    what `evaluate` and `tune` split by time."""
    from nextbuy.store import open_store
    from nextbuy.training import read_interactions

    store = open_store(settings.store_path)
    try:
        events = read_interactions(store)
        items = store.items()
    finally:
        store.close()
    weights = settings.events.all_weights()
    positive = events[events["event_type"].map(weights).fillna(0) > 0]
    return positive.dropna(subset=["user_id", "timestamp"]), None if items.empty else items
