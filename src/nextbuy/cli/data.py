"""`nextbuy init`, `import` and `stats`: a project, its data in, and its health."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from nextbuy.cli.common import ConfigOption, app, console, err_console, settings_for, user_errors
from nextbuy.config import CONFIG_FILENAME, Settings, load_settings
from nextbuy.errors import NextbuyError

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
    settings = settings_for(config)
    mapping = {**settings.import_.mappings.get(kind, {}), **parse_mapping(map_ or [])}
    options = ImportOptions(kind, mapping, fmt, time_format, event_type, undated)
    store = open_store(settings.store_path)
    failed = False
    try:
        for path in files:
            report = _import_with_progress(store, settings, path, options)
            print_import_report(report)
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


def print_import_report(report: Any) -> None:
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
    from nextbuy.ingest.audit import audit
    from nextbuy.store import open_store

    settings = settings_for(config)
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
