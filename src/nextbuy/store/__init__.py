"""Where events, the catalogue, user profiles, served lists, experiments, keys, erasures and
trained model versions are kept; the only package that speaks to a database."""

from pathlib import Path

from nextbuy.errors import ConfigError
from nextbuy.store.base import AppendResult, ErasureReport, Store
from nextbuy.store.sqlite import SQLiteStore


def open_store(url_or_path: str | Path) -> Store:
    """Open a store by URL scheme; a bare path is an SQLite file."""
    text = str(url_or_path)
    if text.startswith(("postgres://", "postgresql://")):
        raise ConfigError(f"{text}: the PostgreSQL store is not available in this version")
    return SQLiteStore(Path(text.removeprefix("sqlite:///")))


__all__ = ["AppendResult", "ErasureReport", "Store", "open_store"]
