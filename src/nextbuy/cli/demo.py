"""`nextbuy demo`: the bundled sample shop imported, trained, evaluated and served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nextbuy.cli.common import app, console, user_errors, with_steps
from nextbuy.cli.data import print_audit, print_import_report
from nextbuy.cli.evaluate import evaluate_and_report
from nextbuy.cli.models import print_train_outcome
from nextbuy.cli.serve import serve_until_stopped
from nextbuy.config import CONFIG_FILENAME, Settings, load_settings

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
    from nextbuy.ingest.audit import audit
    from nextbuy.store import open_store

    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILENAME
    if not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    settings = load_settings(config_path)
    console.rule("1. import the sample shop (UCI Online Retail, CC BY 4.0)")
    store = open_store(settings.store_path)
    try:
        for report in with_steps(lambda step: _import_sample(store, settings, step)):
            print_import_report(report)
        console.rule("2. audit the data")
        print_audit(audit(store))
        console.rule("3. train")
        from nextbuy.training import train_version

        outcome = with_steps(lambda step: train_version(settings, store, step=step))
        print_train_outcome(outcome)
    finally:
        store.close()
    console.rule("4. evaluate against baselines")
    evaluate_and_report(settings, protocol=None, models=None)
    if serve:
        console.rule("5. serve")
        if traffic:  # so the dashboard has live lists, clicks and purchases to show
            from nextbuy.dashboard.traffic import run_in_background

            run_in_background(f"http://{host}:{port}")
        serve_until_stopped(settings, host, port)


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
