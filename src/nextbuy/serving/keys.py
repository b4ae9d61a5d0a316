"""API keys with scopes, kept in their own table of the store's SQLite file.

A key reads `nbk_<id>_<secret>`. Only a salted SHA-256 of the secret is stored, so a copy of
the database does not give anyone a working key; the key is shown once, when created.
Scopes: read (recommendations), write (events, items, users), admin (models, rules, keys).

The server keeps the keys in memory and its watcher thread re-reads the table every second
(`refresh`), so a key created or revoked with `nextbuy keys` takes effect on a running server
within a second and no request waits on the database to check a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from nextbuy.errors import DataError, NotFoundError

SCOPES = ("read", "write", "admin")
PREFIX = "nbk"
TABLE_SQL = """
CREATE TABLE IF NOT EXISTS serving_api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: int

    def allows(self, scope: str) -> bool:
        # admin may do everything; write does not imply read (a tracking pixel needs no recs)
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class _Stored:
    key: ApiKey
    salt: bytes
    digest: bytes


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(scopes)
    unknown = sorted(chosen - set(SCOPES))
    if unknown or not chosen:
        raise DataError(
            f"scope {unknown[0]!r} is not one of {', '.join(SCOPES)}"
            if unknown
            else f"give at least one scope ({', '.join(SCOPES)})"
        )
    return chosen


class KeyStore:
    """Create, list, revoke and verify keys in `serving_api_keys` of the SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._keys: dict[str, _Stored] | None = None
        with self._connect() as conn:
            conn.execute(TABLE_SQL)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn

    # -- administration ----------------------------------------------------------------------
    def create(self, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new key and its secret text, which is not stored anywhere."""
        chosen = check_scopes(scopes)
        if not name.strip():
            raise DataError("a key needs a name (what uses it, e.g. storefront)")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        created = int(time.time() * 1000)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO serving_api_keys VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    name.strip(),
                    json.dumps(sorted(chosen)),
                    salt.hex(),
                    _digest(salt, secret).hex(),
                    created,
                ),
            )
        self.refresh()
        return ApiKey(key_id, name.strip(), chosen, created), f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        return [stored.key for stored in self._read().values()]

    def revoke(self, key_id_or_name: str) -> int:
        """Delete keys by id or by name; how many went."""
        with self._connect() as conn:
            cursor = conn.execute(
                "DELETE FROM serving_api_keys WHERE key_id = ? OR name = ?",
                (key_id_or_name, key_id_or_name),
            )
        self.refresh()
        if cursor.rowcount == 0:
            raise NotFoundError(f"no API key with id or name {key_id_or_name!r}")
        return cursor.rowcount

    # -- the request path --------------------------------------------------------------------
    def any_keys(self) -> bool:
        """False means development mode: the API is open (and bound to localhost)."""
        return bool(self._current())

    def verify(self, presented: str) -> ApiKey | None:
        prefix, _, rest = presented.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != PREFIX or not key_id or not secret:
            return None
        stored = self._current().get(key_id)
        if stored is None or not hmac.compare_digest(stored.digest, _digest(stored.salt, secret)):
            return None
        return stored.key

    def get(self, key_id: str) -> ApiKey | None:
        """A current key by id (dashboard sessions look theirs up on every request)."""
        stored = self._current().get(key_id)
        return None if stored is None else stored.key

    def refresh(self) -> None:
        """Re-read the table (the server's watcher calls this every second)."""
        keys = self._read()
        with self._lock:
            self._keys = keys

    def _current(self) -> dict[str, _Stored]:
        keys = self._keys
        if keys is None:
            self.refresh()
            keys = self._keys
        return keys or {}

    def _read(self) -> dict[str, _Stored]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key_id, name, scopes, salt, hash, created_at FROM serving_api_keys "
                "ORDER BY created_at"
            ).fetchall()
        return {
            key_id: _Stored(
                ApiKey(key_id, name, frozenset(json.loads(scopes)), created),
                bytes.fromhex(salt),
                bytes.fromhex(digest),
            )
            for key_id, name, scopes, salt, digest, created in rows
        }
