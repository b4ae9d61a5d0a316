"""The `nextbuy` command."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

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


def _settings(config: Path | None) -> Settings:
    return load_settings(config)


DEFAULT_CONFIG = """\
# nextbuy configuration. Paths are relative to this file.
# Every key can be overridden by an environment variable: NEXTBUY_SECTION__KEY=value,
# e.g. NEXTBUY_TRAINING__HALF_LIFE_DAYS=30.

data_dir = "nextbuy-data"

# How strongly each event type counts in training (defaults shown).
[events.weights]
view = 1.0
click = 1.0
add_to_cart = 3.0
remove_from_cart = 0.0
wishlist = 2.0
purchase = 5.0
rating = 1.0

[events.custom]
# Event types of your own, with their weight, e.g. return = 0.0

[import]
# Column mappings per kind: nextbuy field = column in your export.
# mappings.interactions = { user_id = "CustomerID", item_id = "StockCode" }
# time_format = "%d/%m/%Y %H:%M"

[training]
# No model named: `nextbuy train` chooses one on the latest window of your events (the
# leaderboard is printed and kept with the version). model = "ease" (or any model) pins it.
# model = "auto"
# budget = "10m"          # search time; by default scaled to the data
half_life_days = 90.0     # where the search starts
"""


@app.command()
@user_errors
def init(
    folder: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
) -> None:
    """Create nextbuy.toml and the data directory here, as `git init` does."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILENAME
    if config_path.exists():
        console.print(f"{config_path} already exists; left unchanged")
    else:
        config_path.write_text(DEFAULT_CONFIG, encoding="utf-8")
        console.print(f"wrote {config_path}")
    settings = load_settings(config_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from nextbuy.store import open_store

    open_store(settings.store_path).close()
    console.print(f"store ready at {settings.store_path}")


@app.command("import")
@user_errors
def import_(
    kind: Annotated[str, typer.Argument(help="interactions, items or users")],
    files: Annotated[list[Path], typer.Argument(help="CSV, TSV, JSONL or Parquet; .gz/.zip ok")],
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", "-m", help="FIELD=COLUMN, e.g. user_id=CustomerID (repeatable)"),
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, tsv, jsonl, parquet")] = None,
    time_format: Annotated[
        str | None, typer.Option(help="strptime format of timestamps, e.g. %d/%m/%Y %H:%M")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option(help="Event type for files without an event_type column")
    ] = None,
    undated: Annotated[bool, typer.Option(help="Accept events without a timestamp")] = False,
    config: ConfigOption = None,
) -> None:
    """Validate and store files; bad rows go to a rejects file with their line and reason."""
    from nextbuy.ingest import ImportOptions, parse_mapping
    from nextbuy.ingest.run import KINDS
    from nextbuy.store import open_store

    if kind not in KINDS:
        raise NextbuyError(f"import {kind}: expected one of {', '.join(KINDS)}")
    settings = _settings(config)
    mapping = {**settings.import_.mappings.get(kind, {}), **parse_mapping(map_ or [])}
    options = ImportOptions(kind, mapping, fmt, time_format, event_type, undated)
    store = open_store(settings.store_path)
    failed = False
    try:
        for path in files:
            report = _import_with_progress(store, settings, path, options)
            _print_import_report(report)
            failed = failed or (report.rows > 0 and report.stored + report.duplicates == 0)
    finally:
        store.close()
    if failed:
        raise typer.Exit(1)


def _import_with_progress(store: Any, settings: Settings, path: Path, options: Any) -> Any:
    from nextbuy.ingest import import_file

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"importing {path.name}", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        return import_file(store, settings, path, options, advance)


def _print_import_report(report: Any) -> None:
    table = Table(title=f"{report.source} ({report.kind})", show_header=True)
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_row("read", f"{report.rows:,}")
    table.add_row("stored", f"{report.stored:,}")
    if report.kind == "interactions":
        table.add_row("already stored (skipped)", f"{report.duplicates:,}")
    table.add_row("rejected", f"{report.rejected:,}")
    for reason, count in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", f"{count:,}")
    console.print(table)
    if report.extra_columns:
        where = "context" if report.kind == "interactions" else "attributes"
        console.print(f"columns kept in {where}: {', '.join(report.extra_columns)}")
    if report.rejects_path:
        console.print(f"rejected rows with line and reason: {report.rejects_path}")
    console.print(f"{report.rows_per_second:,.0f} rows/s")


@app.command()
@user_errors
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit as JSON")] = False,
    config: ConfigOption = None,
) -> None:
    """Audit the stored data: volumes, time range and gaps, long tail, catalog coverage."""
    from nextbuy.audit import audit
    from nextbuy.store import open_store

    settings = _settings(config)
    store = open_store(settings.store_path)
    try:
        result = audit(store)
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        print_audit(result)


def print_audit(result: dict[str, Any]) -> None:
    table = Table(title="data audit", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("events", f"{result['events']:,}"),
        *[(f"  {t}", f"{n:,}") for t, n in result["events_by_type"].items()],
        ("users", f"{result['users']:,}"),
        ("events without a user (anonymous sessions)", f"{result['anonymous_events']:,}"),
        ("items in events", f"{result['items_in_events']:,}"),
        ("items in catalog", f"{result['catalog_items']:,}"),
        ("user profiles", f"{result['profiles']:,}"),
        ("first event", str(result["first_event"])),
        ("last event", str(result["last_event"])),
        ("days without events", f"{result['gaps'].get('days_without_events', 0):,}"),
        ("longest gap (days)", f"{result['gaps'].get('longest_gap_days', 0):,}"),
    ]
    per_user, per_item = result["events_per_user"], result["events_per_item"]
    if per_user:
        rows.append(
            (
                "events per user: median / p90 / max",
                f"{per_user['median']:g} / {per_user['p90']:g} / {per_user['max']:,}",
            )
        )
    if per_item:
        rows.append(
            (
                "events per item: median / p90 / max",
                f"{per_item['median']:g} / {per_item['p90']:g} / {per_item['max']:,}",
            )
        )
    rows += [
        ("long-tail share (events outside top 20% items)", f"{result['long_tail_share']:.1%}"),
        ("users with ≥ 3 purchases", f"{result['share_users_with_3_purchases']:.1%}"),
        ("duplicate rows", f"{result['duplicate_rows']:,}"),
        (
            "items in events missing from catalog",
            "n/a (no catalog)"
            if result["items_missing_from_catalog"] is None
            else f"{result['items_missing_from_catalog']:,}",
        ),
        ("catalog items never interacted with", f"{result['catalog_items_never_interacted']:,}"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    months = result["new_users_per_month"]
    if months:
        month_table = Table(title="new users per month")
        month_table.add_column("month")
        month_table.add_column("new users", justify="right")
        month_table.add_column("share of all users", justify="right")
        for month, row in months.items():
            month_table.add_row(month, f"{row['new_users']:,}", f"{row['share_of_users']:.1%}")
        console.print(month_table)


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

    settings = _settings(config)
    store = open_store(settings.store_path)
    try:
        outcome = _with_steps(
            lambda step: train_version(settings, store, model, step=step, budget=budget)
        )
    finally:
        store.close()
    _print_train_outcome(outcome)


def _with_steps(work: Callable[[Callable[[str], None]], Any]) -> Any:
    """Run `work`, showing each step it announces under a spinner with elapsed time."""
    from rich.progress import SpinnerColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        return work(lambda text: progress.update(task, description=text))


LEADERBOARD_ROWS = 15


def _print_train_outcome(outcome: Any) -> None:
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
        cells = [str(row["rank"]), label, _number(row["ndcg@10"])]
        cells += [_number(row["other"])] if other else []
        cells += [_number(row["recall@10"]), f"{row['coverage@10']:.0%}"]
        cells.append(_number(row["fit_seconds"], 1))
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


def _number(value: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


models_app = typer.Typer(
    help="List, promote and roll back trained model versions.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
@user_errors
def models_list(config: ConfigOption = None) -> None:
    """Every trained version with its validation metrics and whether its lists may repeat
    purchases; * marks the one in service."""
    from nextbuy.registry import ModelRegistry

    registry = ModelRegistry(_settings(config).models_dir)
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
    from nextbuy.registry import ModelRegistry

    ModelRegistry(_settings(config).models_dir).promote(version, "promoted by hand")
    console.print(f"{version} is now in service")


@models_app.command("rollback")
@user_errors
def models_rollback(config: ConfigOption = None) -> None:
    """Serve the version that was in service before the current one."""
    from nextbuy.registry import ModelRegistry

    previous = ModelRegistry(_settings(config).models_dir).rollback()
    console.print(f"rolled back: {previous} is now in service")


def load_serving_engine(settings: Settings) -> Any:
    from nextbuy.engine import Engine
    from nextbuy.registry import ModelRegistry

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

    settings = _settings(config)
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


DEFAULT_EVALUATED_MODELS = ("ease", "als", "bpr", "itemknn", "trending")
PROTOCOLS = ("discovery", "repeat")


@app.command()
@user_errors
def evaluate(
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Models to compare (repeatable)")
    ] = None,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="discovery (bought items excluded), repeat, or standard; default: both "
            "discovery and repeat, the one the served lists follow first"
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Compare models on a temporal split next to random and popularity; writes an HTML report."""
    _evaluate(_settings(config), protocol, model)


def _evaluate(settings: Settings, protocol: str | None, models: list[str] | None) -> None:
    from nextbuy.evaluation.report import print_table, write_report
    from nextbuy.registry import ModelRegistry

    serving = ModelRegistry(settings.models_dir).serving()
    meta = None if serving is None else serving.meta
    in_force = "discovery" if settings.training.excludes_seen(meta) else "repeat"
    protocols = [protocol] if protocol else [in_force, *(p for p in PROTOCOLS if p != in_force)]
    results = _with_steps(lambda step: _run_evaluation(settings, meta, protocols, models, step))
    if serving is not None:
        console.print(f"served: {serving.name}, {meta['model']}, with its decay and event weights")
    for result in results:
        console.rule(f"{result.protocol} protocol")
        print_table(result, console)
    reports = settings.data_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    html, data = reports / "evaluation.html", reports / "evaluation.json"
    first = results[0]
    write_report(
        first,
        html,
        data,
        title=f"nextbuy evaluation ({first.protocol} protocol)",
        others=results[1:],
        choice=None if meta is None else meta.get("choice"),
    )
    console.print(f"report: {html.resolve()}\nevery number: {data.resolve()}")


def _run_evaluation(
    settings: Settings,
    meta: dict[str, Any] | None,
    protocols: list[str],
    models: list[str] | None,
    step: Callable[[str], None],
) -> list[Any]:
    """The served configuration (its model, decay and event weights) beside the usual
    families, fitted on the first 80% of the dated events and scored on the rest, under
    each protocol."""
    from nextbuy.engine import model_params
    from nextbuy.evaluation.runner import evaluate_protocols
    from nextbuy.evaluation.splits import temporal_split
    from nextbuy.models import create_model

    step("reading events")
    positive, items = _positive_events(settings)
    split = temporal_split(positive, test_fraction=0.2)
    from nextbuy.config import AUTO_MODEL

    served = _served_model(settings, meta)
    configured = [] if settings.training.model == AUTO_MODEL else [settings.training.model]
    names = list(models or dict.fromkeys([*configured, *DEFAULT_EVALUATED_MODELS]))
    chosen = {name: create_model(name, **model_params(settings, name)) for name in names}
    if served is not None and not models:
        chosen = {served[0]: served[1], **{n: m for n, m in chosen.items() if n != served[0]}}
    weights, half_life = settings.events.all_weights(), settings.training.half_life_days
    if meta is not None:
        weights, half_life = meta.get("weights") or weights, meta.get("half_life_days")
    step(f"fitting and scoring {len(chosen)} models and the baselines")
    return evaluate_protocols(
        split,
        chosen,
        protocols=protocols,
        items=items,
        weights=weights,
        half_life_days=half_life,
    )


def _served_model(settings: Settings, meta: dict[str, Any] | None) -> tuple[str, Any] | None:
    """(name, an unfitted copy of the model in service), if one is."""
    from nextbuy.models import create_model

    if meta is None:
        return None
    params = dict(meta.get("params") or {})
    return str(meta["model"]), create_model(str(meta["model"]), **params)


def _positive_events(settings: Settings) -> tuple[Any, Any]:
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


@app.command()
@user_errors
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: [serving] host)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: [serving] port)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs); swaps to a newly promoted model by itself."""
    settings = _settings(config)
    _serve(settings, host or settings.serving.host, port or settings.serving.port)


def _serve(settings: Settings, host: str, port: int) -> None:
    import logging

    from rich.logging import RichHandler

    from nextbuy.serving.keys import KeyStore
    from nextbuy.serving.server import check_host, run_server

    development = not KeyStore(settings.store_path).any_keys()
    check_host(host, development)
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=err_console)]
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    if development:
        err_console.print(
            "[bold red]WARNING: no API key exists, so the API is open to anything that can "
            f"reach {host}:{port}.[/bold red] Development mode is bound to localhost; create a "
            "key with `nextbuy keys create --scope read --name storefront` before exposing it.",
            soft_wrap=True,
        )
    base = f"http://{host}:{port}"
    console.print(f"API:       {base}  (interactive docs: {base}/docs)")
    console.print("Ctrl-C stops the server.")
    console.print(f"dashboard: {base}/dashboard")
    run_server(settings, host, port)


keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
@user_errors
def keys_create(
    name: Annotated[str, typer.Option(help="What uses the key, e.g. storefront")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="read, write or admin (repeatable)")
    ],
    config: ConfigOption = None,
) -> None:
    """Create a key; it is printed once and only a salted hash is stored."""
    from nextbuy.serving.keys import KeyStore

    key, secret = KeyStore(_settings(config).store_path).create(name, scope)
    err_console.print(
        f"created key {key.key_id} ({key.name}; scopes: {', '.join(sorted(key.scopes))}). "
        "Store it now: it cannot be shown again."
    )
    sys.stdout.write(secret + "\n")


@keys_app.command("list")
@user_errors
def keys_list(config: ConfigOption = None) -> None:
    """Key ids, names and scopes (never the keys themselves)."""
    from datetime import UTC, datetime

    from nextbuy.serving.keys import KeyStore

    table = Table(title="API keys")
    for column in ("id", "name", "scopes", "created"):
        table.add_column(column)
    for key in KeyStore(_settings(config).store_path).list():
        created = datetime.fromtimestamp(key.created_at / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(key.key_id, key.name, ", ".join(sorted(key.scopes)), created)
    console.print(table)


@keys_app.command("revoke")
@user_errors
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or name")], config: ConfigOption = None
) -> None:
    """Revoke keys by id or name; a running server refuses them within a second."""
    from nextbuy.serving.keys import KeyStore

    count = KeyStore(_settings(config).store_path).revoke(key)
    console.print(f"revoked {count} key(s)")


experiment_app = typer.Typer(
    help="A/B tests: create, list, start, pause, stop, status and an HTML report.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")


def _experiments(config: Path | None) -> Any:
    from nextbuy.experiments.registry import ExperimentRegistry
    from nextbuy.store import open_store

    settings = _settings(config)
    open_store(settings.store_path).close()  # the experiment tables exist from here on
    return settings, ExperimentRegistry(settings.store_path, settings.experiments)


def _variant(spec: str, **flags: bool) -> dict[str, Any]:
    """NAME[:MODEL_VERSION][=WEIGHT] as a variant table."""
    body, _, weight = spec.partition("=")
    name, _, version = body.partition(":")
    variant: dict[str, Any] = {"name": name.strip(), **{k: v for k, v in flags.items() if v}}
    if version.strip():
        variant["model_version"] = version.strip()
    if weight.strip():
        try:
            variant["weight"] = float(weight)
        except ValueError:
            raise NextbuyError(f"variant {spec!r}: weight {weight!r} is not a number") from None
    return variant


def _from_toml(path: Path) -> list[dict[str, Any]]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NextbuyError(f"{path}: {exc}") from None
    found = data.get("experiments", data)
    return found if isinstance(found, list) else [found]


@experiment_app.command("create")
@user_errors
def experiment_create(
    name: Annotated[str | None, typer.Option(help="Experiment name (and default salt)")] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant", "-v", help="NAME[:MODEL_VERSION][=WEIGHT], e.g. b:v0002 (repeatable)"
        ),
    ] = None,
    holdout: Annotated[
        str | None, typer.Option(help="NAME[=WEIGHT] of a non-personalised holdout arm")
    ] = None,
    shadow: Annotated[
        list[str] | None,
        typer.Option(help="NAME:MODEL_VERSION computed and logged but never shown (repeatable)"),
    ] = None,
    layer: Annotated[str, typer.Option(help="Experiments of one layer never share a user")] = (
        "default"
    ),
    traffic: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of the layer")] = 1.0,
    unit: Annotated[str, typer.Option(help="user, or session for anonymous traffic")] = "user",
    bandit: Annotated[bool, typer.Option(help="Thompson sampling moves traffic")] = False,
    metric: Annotated[str, typer.Option(help="Bandit reward: ctr or conversion")] = "ctr",
    floor: Annotated[float, typer.Option(help="Least share every bandit arm keeps")] = 0.05,
    alpha: float = 0.05,
    mde: Annotated[
        float | None, typer.Option(help="Relative lift the test is powered to detect")
    ] = None,
    from_toml: Annotated[
        Path | None, typer.Option(help="TOML with [[experiments]] tables instead of options")
    ] = None,
    start: Annotated[bool, typer.Option(help="Start at once (else a draft)")] = False,
    config: ConfigOption = None,
) -> None:
    """Create an experiment; a running server picks it up within a second."""
    from nextbuy.experiments.registry import parse_experiment

    _, registry = _experiments(config)
    if from_toml is not None:
        tables = _from_toml(from_toml)
    else:
        if not name or not variant:
            raise NextbuyError("give --name and at least one --variant, or --from-toml FILE")
        variants = [_variant(v) for v in variant]
        if holdout:
            variants.append(_variant(holdout, holdout=True))
        variants += [_variant(s, shadow=True) for s in shadow or []]
        tables = [
            {
                "name": name, "layer": layer, "traffic": traffic, "unit": unit,
                "variants": variants, "allocation": "thompson" if bandit else "fixed",
                "bandit_metric": metric, "exploration_floor": floor, "alpha": alpha,
                "min_detectable_effect": mde,
            }
        ]  # fmt: skip
    for table in tables:
        if start:
            table = {**table, "status": "running"}
        created = registry.create(parse_experiment(table))
        arms = ", ".join(
            f"{v.name}{':' + v.model_version if v.model_version else ''}"
            f"{' (holdout)' if v.holdout else ''}{' (shadow)' if v.shadow else ''}"
            for v in created.variants
        )
        console.print(f"created {created.name} ({created.status}) in layer {created.layer}: {arms}")
        if not start:
            console.print(f"start it with `nextbuy experiment start {created.name}`")


@experiment_app.command("list")
@user_errors
def experiment_list(config: ConfigOption = None) -> None:
    """Every experiment (nextbuy.toml and created ones) with status, layer and split."""
    _, registry = _experiments(config)
    table = Table(title="experiments")
    for column in ("name", "status", "layer", "traffic", "allocation", "variants", "started"):
        table.add_column(column)
    for e in registry.all():
        weights = e.planned_weights()
        arms = ", ".join(
            f"{v.name}{':' + v.model_version if v.model_version else ''}"
            + (" shadow" if v.shadow else f" {weights[v.name]:.0%}")
            + (" holdout" if v.holdout else "")
            for v in e.variants
        )
        started = e.started_at.strftime("%Y-%m-%d %H:%M") if e.started_at else ""
        table.add_row(e.name, e.status, e.layer, f"{e.traffic:.0%}", e.allocation, arms, started)
    console.print(table)


def _change_experiment(name: str, action: Any, config: Path | None) -> None:
    _, registry = _experiments(config)
    changed = registry.change(name, action)
    console.print(f"{changed.name} is now {changed.status}")


@experiment_app.command("start")
@user_errors
def experiment_start(name: str, config: ConfigOption = None) -> None:
    """Start a draft; a running server serves it once the model versions it names load."""
    _change_experiment(name, "start", config)


@experiment_app.command("pause")
@user_errors
def experiment_pause(name: str, config: ConfigOption = None) -> None:
    """Pause: everyone gets the current logic until `resume`."""
    _change_experiment(name, "pause", config)


@experiment_app.command("resume")
@user_errors
def experiment_resume(name: str, config: ConfigOption = None) -> None:
    """Resume a paused experiment."""
    _change_experiment(name, "resume", config)


@experiment_app.command("stop")
@user_errors
def experiment_stop(name: str, config: ConfigOption = None) -> None:
    """Stop for good (its data stays for the report)."""
    _change_experiment(name, "stop", config)


@experiment_app.command("status")
@user_errors
def experiment_status(name: str, config: ConfigOption = None) -> None:
    """Per variant: units, lists, CTR, conversion, revenue per visitor, lift, p-values."""
    from nextbuy.experiments.reporting import results_for

    settings, _ = _experiments(config)
    results = _with_steps(lambda step: (step(f"analysing {name}"), results_for(settings, name))[1])
    e = results.experiment
    console.print(f"{e.name}: {e.status}, layer {e.layer}, allocation {e.allocation}")
    wide = results.summary()
    table = Table(title=f"{e.name} (control: {e.control})")
    for column in ("variant", "units", "lists", "CTR", "conversion", "rev/visitor", "CTR lift",
                   "p", "always-valid p"):  # fmt: skip
        table.add_column(column)
    for r in wide.to_dict(orient="records"):
        lift = r.get("ctr_lift")
        has_lift = lift is not None and lift == lift
        table.add_row(
            r["variant"], f"{r['units']:,.0f}", f"{r['impressions']:,.0f}", f"{r['ctr']:.4f}",
            f"{r['conversion']:.2%}", f"{r['revenue_per_visitor']:.2f}",
            f"{lift:+.1%} [{r['ctr_lift_ci_low']:+.1%}, {r['ctr_lift_ci_high']:+.1%}]"
            if has_lift else "control",
            f"{r['ctr_p_value']:.3g}" if has_lift else "",
            f"{r['ctr_p_value_always_valid']:.3g}" if has_lift else "",
        )  # fmt: skip
    console.print(table)
    for note in results.notes:
        if not note.startswith("Significance is judged"):  # the method: see the report
            console.print(note, soft_wrap=True)
    console.print("significance: always-valid p-values (mSPRT); details in the report")


@experiment_app.command("report")
@user_errors
def experiment_report(
    name: str,
    out: Annotated[Path | None, typer.Option(help="HTML file (JSON beside it)")] = None,
    config: ConfigOption = None,
) -> None:
    """HTML report: verdict, lift over time with its band, traffic split, segments."""
    from nextbuy.experiments.report import write_report
    from nextbuy.experiments.reporting import results_for

    settings, _ = _experiments(config)
    results = _with_steps(lambda step: (step(f"analysing {name}"), results_for(settings, name))[1])
    html, data = write_report(results, out or Path(f"experiment-{name}.html"))
    console.print(f"wrote {html} and {data}")


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

    settings = _settings(config)
    name = model or settings.training.model
    if name == AUTO_MODEL:
        raise NextbuyError(
            "`nextbuy train` chooses and tunes the model itself (model = auto); give "
            "--model NAME to tune one model for a configuration that pins it"
        )
    positive, items = _positive_events(settings)
    weights = settings.events.all_weights()
    # The newest window stays unseen, as in `evaluate`; tuning uses the one before it.
    split = temporal_split(positive, test_fraction=0.2, validation_fraction=0.1)
    protocol = "discovery" if settings.training.excludes_seen() else "repeat"
    result = _with_steps(
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


DEMO_CONFIG = """\
# nextbuy demo project: the bundled UCI Online Retail sample shop (CC BY 4.0).
data_dir = "nextbuy-data"

[events.custom]
# Cancelled invoice lines and stock write-offs are kept, but do not count as interest.
cancellation = 0.0
stock_adjustment = 0.0

[training]
# No model named: `nextbuy train` chooses on the latest window of the shop's events, within
# 100 seconds of search on this sample (the budget scales with the data by default).
budget = "100s"
"""


@app.command()
@user_errors
def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Project folder to create or reuse")] = Path(
        "demo"
    ),
    serve: Annotated[bool, typer.Option(help="Serve the API and dashboard at the end")] = True,
    traffic: Annotated[
        bool, typer.Option(help="Send a short simulated traffic run to the server it starts")
    ] = True,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """The main job on the bundled sample shop: import, audit, train, evaluate, serve."""
    from nextbuy.audit import audit
    from nextbuy.store import open_store

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILENAME
    if not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    settings = load_settings(config_path)
    console.rule("1. import the sample shop (UCI Online Retail, CC BY 4.0)")
    store = open_store(settings.store_path)
    try:
        for report in _with_steps(lambda step: _import_sample(store, settings, step)):
            _print_import_report(report)
        console.rule("2. audit the data")
        print_audit(audit(store))
        console.rule("3. train")
        from nextbuy.training import train_version

        outcome = _with_steps(lambda step: train_version(settings, store, step=step))
        _print_train_outcome(outcome)
    finally:
        store.close()
    console.rule("4. evaluate against baselines")
    _evaluate(settings, protocol=None, models=None)
    if serve:
        console.rule("5. serve")
        if traffic:  # so the dashboard has live lists, clicks and purchases to show
            from nextbuy.dashboard.traffic import run_in_background

            run_in_background(f"http://{host}:{port}")
        _serve(settings, host, port)


def _import_sample(store: Any, settings: Settings, step: Callable[[str], None]) -> list[Any]:
    from nextbuy.datasets import load_sample_shop
    from nextbuy.ingest import ImportOptions, import_frame

    step("reading the bundled sample")
    shop = load_sample_shop()
    reports = []
    for kind, frame in (
        ("items", shop.items),
        ("users", shop.users),
        ("interactions", shop.interactions),
    ):
        if frame is None:
            continue
        step(f"importing {len(frame):,} {kind}")
        reports.append(
            import_frame(store, settings, frame, f"sample:{shop.name}:{kind}", ImportOptions(kind))
        )
    return reports


def main() -> None:
    app()


if __name__ == "__main__":
    main()
