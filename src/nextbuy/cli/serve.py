"""`nextbuy serve` and `keys ...`: the API and dashboard, and who may call them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from nextbuy.cli.common import ConfigOption, app, console, err_console, settings_for, user_errors
from nextbuy.config import Settings


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
    settings = settings_for(config)
    serve_until_stopped(settings, host or settings.serving.host, port or settings.serving.port)


def serve_until_stopped(settings: Settings, host: str, port: int) -> None:
    import logging

    from rich.logging import RichHandler

    from nextbuy.server.run import check_host, run_server
    from nextbuy.serving.keys import KeyStore

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

    key, secret = KeyStore(settings_for(config).store_path).create(name, scope)
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
    for key in KeyStore(settings_for(config).store_path).list():
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

    count = KeyStore(settings_for(config).store_path).revoke(key)
    console.print(f"revoked {count} key(s)")
