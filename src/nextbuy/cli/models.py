"""`nextbuy train`, `tune`, `recommend` and `models ...`: versions trained, chosen and used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nextbuy.cli.common import (
    ConfigOption,
    app,
    console,
    err_console,
    number,
    positive_events,
    settings_for,
    user_errors,
    with_steps,
)
from nextbuy.config import Settings
from nextbuy.errors import NextbuyError


@app.command()
@user_errors
def train(
    model: Annotated[
        str | None,
        typer.Option(help="Pin a model (default: the configured one; `auto` chooses)"),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(help="Search time of the automatic choice: 90s, 10m, 1h (default: scaled)"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Choose a model on the latest window (or take the configured one), train it on every
    event, and serve it if it is not worse than the current version."""
    from nextbuy.store import open_store
    from nextbuy.training import train_version

    settings = settings_for(config)
    store = open_store(settings.store_path)
    try:
        outcome = with_steps(
            lambda step: train_version(settings, store, model, step=step, budget=budget)
        )
    finally:
        store.close()
    print_train_outcome(outcome)


LEADERBOARD_ROWS = 15


def print_train_outcome(outcome: Any) -> None:
    choice = outcome.version.meta["choice"]
    _print_choice(choice)
    metrics = outcome.metrics
    console.print(
        f"trained {outcome.version.name} ({outcome.version.meta['model']}): "
        f"validation NDCG@10 {metrics.get('ndcg@10', 0):.4f}, "
        f"recall@10 {metrics.get('recall@10', 0):.4f}, "
        f"coverage@10 {metrics.get('coverage@10', 0):.1%} "
        f"over {int(metrics.get('validation_users', 0)):,} customers of the window "
        f"({choice['protocol']} protocol)"
    )
    verdict = "promoted" if outcome.promoted else "not promoted"
    console.print(f"{verdict}: {outcome.reason}")
    console.print(f"artifact: {outcome.version.path}")


def _print_choice(choice: dict[str, Any]) -> None:
    """The data's shape, the protocol decision, the leaderboard and the verdict."""
    from nextbuy.evaluation.leaderboard import failed, leaderboard_rows, other_protocol

    for line in _shape_lines(choice["shape"]):
        console.print(f"data: {line}", highlight=False)
    console.print(f"validation: {choice.get('validation_reason', '')}", highlight=False)
    console.print(f"lists: {choice['protocol_reason']}", highlight=False)
    other = other_protocol(choice)
    rows = leaderboard_rows(choice, LEADERBOARD_ROWS)
    table = Table(
        title=f"leaderboard: validation window, {choice['protocol']} protocol", box=box.SIMPLE
    )
    headers = ["#", "candidate", "NDCG@10", *([other[:5] + "."] if other else [])]
    for header in (*headers, "recall", "cover", "fit s"):
        table.add_column(header, justify="left" if header == "candidate" else "right")
    for row in rows:
        label = f"{row['model']} [dim]({row['matrix']})[/dim]"
        cells = [str(row["rank"]), label, number(row["ndcg@10"])]
        cells += [number(row["other"])] if other else []
        cells += [number(row["recall@10"]), f"{row['coverage@10']:.0%}"]
        cells.append(number(row["fit_seconds"], 1))
        style = "bold green" if row["chosen"] else ("dim" if row["baseline"] else None)
        table.add_row(*cells, style=style)
    console.print(table)
    scored = sum(1 for t in choice["trials"] if not t.get("error"))
    seconds, budget = choice["seconds"], choice["budget_seconds"]
    console.print(
        f"{scored} candidates scored in {seconds:.0f} s of a {budget:.0f} s budget "
        "(`nextbuy train --budget` to change it)",
        highlight=False,
    )
    for note in choice.get("notes", []):
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for label, error in failed(choice)[:5]:
        console.print(f"could not fit {label}: {error}", highlight=False, soft_wrap=True)
    console.print(f"[bold]{choice['verdict']}[/bold]", highlight=False, soft_wrap=True)


def _shape_lines(shape: dict[str, Any]) -> list[str]:
    from nextbuy.choice.shape import DataShape

    fields = {"dated_share": 1.0, **shape, "event_types": tuple(shape["event_types"])}
    scale = shape.get("rating_scale")
    fields["rating_scale"] = None if scale is None else tuple(scale)
    return DataShape(**fields).lines()


models_app = typer.Typer(
    help="List, promote and roll back trained model versions.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
@user_errors
def models_list(config: ConfigOption = None) -> None:
    """Every trained version with its validation metrics and whether its lists may repeat
    purchases; * marks the one in service."""
    from nextbuy.store.registry import ModelRegistry

    registry = ModelRegistry(settings_for(config).models_dir)
    serving = registry.serving_state().get("version")
    table = Table(title="model versions")
    for column in ("", "version", "model", "lists", "trained at", "events", "NDCG@10", "recall@10"):
        table.add_column(column)
    for version in registry.versions():
        meta, metrics = version.meta, version.metrics
        chosen = (meta.get("choice") or {}).get("winner", {}).get("label")
        table.add_row(
            "*" if version.name == serving else "",
            version.name,
            chosen or meta.get("model", "?"),
            "may repeat" if meta.get("exclude_seen") is False else "new items",
            str(meta.get("trained_at", ""))[:19],
            f"{meta.get('events', 0):,}",
            f"{metrics.get('ndcg@10', float('nan')):.4f}",
            f"{metrics.get('recall@10', float('nan')):.4f}",
        )
    console.print(table)


@models_app.command("promote")
@user_errors
def models_promote(version: str, config: ConfigOption = None) -> None:
    """Serve this version (a running server swaps to it within seconds)."""
    from nextbuy.store.registry import ModelRegistry

    ModelRegistry(settings_for(config).models_dir).promote(version, "promoted by hand")
    console.print(f"{version} is now in service")


@models_app.command("rollback")
@user_errors
def models_rollback(config: ConfigOption = None) -> None:
    """Serve the version that was in service before the current one."""
    from nextbuy.store.registry import ModelRegistry

    previous = ModelRegistry(settings_for(config).models_dir).rollback()
    console.print(f"rolled back: {previous} is now in service")


def load_serving_engine(settings: Settings) -> Any:
    from nextbuy.engine import Engine
    from nextbuy.store.registry import ModelRegistry

    version = ModelRegistry(settings.models_dir).serving()
    if version is None:
        raise NextbuyError("no trained model yet: run `nextbuy train` first")
    return Engine.load(version.path, settings)


@app.command()
@user_errors
def recommend(
    users: Annotated[str, typer.Option(help="'all', or comma-separated user ids")] = "all",
    k: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    out: Annotated[Path, typer.Option(help=".parquet, .csv or .jsonl")] = Path("recs.parquet"),
    new_only: Annotated[
        bool | None,
        typer.Option(
            "--new-only/--with-repeats",
            help="Leave out (or allow) what a customer had; default: as `nextbuy train` "
            "decided from the data",
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            help="Placement whose rules apply, as the API applies them (e.g. home, email); "
            "default: none, the model's own order"
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Batch recommendations for many users (e.g. a personalised e-mail campaign): what the
    API would answer each of them, consent, erasures and availability included."""
    from nextbuy.serving.batch import batch_lists

    settings = settings_for(config)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv", ".jsonl", ".json"):
        raise NextbuyError(f"{out}: expected a .parquet, .csv or .jsonl file name")
    wanted = None if users == "all" else [u.strip() for u in users.split(",") if u.strip()]
    columns = (TextColumn("recommending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("recommending", total=None)
        table = batch_lists(
            settings,
            wanted,
            k,
            placement,
            new_only,
            lambda done, total: progress.update(task, completed=done, total=total),
        )
    # written aside and renamed, so Ctrl-C never leaves half a file where the last one was
    partial = out.with_name(f".{out.name}.partial")
    if suffix == ".parquet":
        table.to_parquet(partial, index=False)
    elif suffix == ".csv":
        table.to_csv(partial, index=False)
    else:
        table.to_json(partial, orient="records", lines=True)
    partial.replace(out)
    console.print(f"wrote {len(table):,} rows for {table['user_id'].nunique():,} users to {out}")


@app.command()
@user_errors
def tune(
    model: Annotated[str | None, typer.Option(help="Model to tune (default: configured)")] = None,
    trials: Annotated[int, typer.Option(min=1, help="Number of Optuna trials")] = 30,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds")] = None,
    metric: str = "ndcg@10",
    config: ConfigOption = None,
) -> None:
    """Search hyper-parameters on the validation window only; the best are used from then on."""
    from nextbuy.config import AUTO_MODEL
    from nextbuy.engine import TUNED_FILE, tuned_params
    from nextbuy.evaluation.splits import temporal_split
    from nextbuy.evaluation.tuning import tune as run_tuning

    settings = settings_for(config)
    name = model or settings.training.model
    if name == AUTO_MODEL:
        raise NextbuyError(
            "`nextbuy train` chooses and tunes the model itself (model = auto); give "
            "--model NAME to tune one model for a configuration that pins it"
        )
    positive, items = positive_events(settings)
    weights = settings.events.all_weights()
    # The newest window stays unseen, as in `evaluate`; tuning uses the one before it.
    split = temporal_split(positive, test_fraction=0.2, validation_fraction=0.1)
    protocol = "discovery" if settings.training.excludes_seen() else "repeat"
    result = with_steps(
        lambda step: (
            step(f"tuning {name}: {trials} trials on the validation window"),
            run_tuning(
                name,
                split,
                n_trials=trials,
                timeout=timeout,
                metric=metric,
                protocol=protocol,
                weights=weights,
                half_life_days=settings.training.half_life_days,
                items=items,
            ),
        )[1]
    )
    stored = tuned_params(settings)
    stored[name] = result.best_params
    path = settings.data_dir / TUNED_FILE
    path.write_text(json.dumps(stored, indent=2, default=str), encoding="utf-8")
    console.print(
        f"{name}: validation {metric} {result.best_value:.4f} "
        f"(defaults {result.default_value:.4f}) with {result.best_params}"
    )
    console.print(f"saved to {path}; `nextbuy train` uses them unless nextbuy.toml sets others")
