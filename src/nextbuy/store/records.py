"""Small record tables the server keeps beside the events: API keys and erasures.

What a key means (scopes, hashing, verification) and what an erasure suppresses belong to
serving; how the rows are kept belongs here, behind a protocol per table, so another backend
implements the same few methods and no caller sees SQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

KEYS_SQL = """
CREATE TABLE IF NOT EXISTS serving_api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
)
"""
ERASURES_SQL = """
CREATE TABLE IF NOT EXISTS serving_erasures (
    user_hash TEXT PRIMARY KEY,
    erased_at INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class KeyRecord:
    """One API key as kept: never its secret, only a salted digest of it."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    salt: bytes
    digest: bytes
    created_at: int  # unix ms


class KeyTable(Protocol):
    def add(self, record: KeyRecord) -> None: ...

    def all(self) -> list[KeyRecord]:
        """Every key, oldest first."""
        ...

    def remove(self, key_id_or_name: str) -> int:
        """Delete the keys with this id or name; how many went."""
        ...


class ErasureTable(Protocol):
    def record(self, user_hash: str, erased_at_ms: int) -> None:
        """Keep (or move to this time) the erasure of the user with this hash."""
        ...

    def all(self) -> dict[str, int]:
        """user hash -> when the user was erased (unix ms)."""
        ...


def open_key_table(path: Path) -> KeyTable:
    return _SQLiteKeyTable(path)


def open_erasure_table(path: Path) -> ErasureTable:
    return _SQLiteErasureTable(path)


class _SQLiteTable:
    """One table in the store's SQLite file, a short connection per call (the server's
    threads and the CLI share the file)."""

    create_sql = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with self._connect() as conn:
            conn.execute(self.create_sql)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn


class _SQLiteKeyTable(_SQLiteTable):
    create_sql = KEYS_SQL

    def add(self, record: KeyRecord) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO serving_api_keys VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    record.name,
                    json.dumps(sorted(record.scopes)),
                    record.salt.hex(),
                    record.digest.hex(),
                    record.created_at,
                ),
            )

    def all(self) -> list[KeyRecord]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key_id, name, scopes, salt, hash, created_at FROM serving_api_keys "
                "ORDER BY created_at"
            ).fetchall()
        return [
            KeyRecord(
                key_id,
                name,
                tuple(json.loads(scopes)),
                bytes.fromhex(salt),
                bytes.fromhex(digest),
                created,
            )
            for key_id, name, scopes, salt, digest, created in rows
        ]

    def remove(self, key_id_or_name: str) -> int:
        with self._connect() as conn:
            cursor = conn.execute(
                "DELETE FROM serving_api_keys WHERE key_id = ? OR name = ?",
                (key_id_or_name, key_id_or_name),
            )
        return cursor.rowcount


class _SQLiteErasureTable(_SQLiteTable):
    create_sql = ERASURES_SQL

    def record(self, user_hash: str, erased_at_ms: int) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO serving_erasures VALUES (?, ?) "
                "ON CONFLICT(user_hash) DO UPDATE SET erased_at = excluded.erased_at",
                (user_hash, erased_at_ms),
            )

    def all(self) -> dict[str, int]:
        with self._connect() as conn:
            rows = conn.execute("SELECT user_hash, erased_at FROM serving_erasures").fetchall()
        return dict(rows)
