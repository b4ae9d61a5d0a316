"""What the server reads from the store at load time, with a fast path for SQLite.

With the embedded store the server runs its own read-only queries on the same file: it
needs only a few columns (and, for profiles, only the rows that change an answer), and it
does not depend on the store's DataFrame conversion of optional JSON columns. Any other
store is read through the Store protocol.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from nextbuy.store.base import Store
from nextbuy.store.sqlite import SQLiteStore

ITEM_COLUMNS = (
    "item_id",
    "title",
    "category",
    "brand",
    "price",
    "margin",
    "available",
    "stock",
    "created_at",
    "tags",
)


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
        yield conn


def sqlite_path(store: Store) -> Path | None:
    path = getattr(store, "path", None)
    return Path(path) if isinstance(store, SQLiteStore) and path is not None else None


def read_items(store: Store) -> pd.DataFrame:
    """The catalogue columns the request path uses; tags as lists."""
    path = sqlite_path(store)
    if path is None:
        return store.items()
    with read_only(path) as conn:
        rows = conn.execute(f"SELECT {','.join(ITEM_COLUMNS)} FROM items").fetchall()
    frame = pd.DataFrame(rows, columns=list(ITEM_COLUMNS), dtype=object)
    frame["tags"] = frame["tags"].map(_json_or_none)
    frame["available"] = frame["available"].map(lambda v: v is None or bool(v))
    return frame


def read_profiles(store: Store) -> pd.DataFrame:
    """user_id, consent, onboarding of the users whose profile changes an answer."""
    path = sqlite_path(store)
    if path is None:
        return store.users()[["user_id", "consent", "onboarding"]]
    with read_only(path) as conn:
        rows = conn.execute(
            "SELECT user_id, consent, onboarding FROM users "
            "WHERE consent = 0 OR onboarding IS NOT NULL"
        ).fetchall()
    frame = pd.DataFrame(rows, columns=["user_id", "consent", "onboarding"], dtype=object)
    frame["onboarding"] = frame["onboarding"].map(_json_or_none)
    return frame


def _json_or_none(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) and value else None
