"""API keys with scopes, kept in their own table of the store.

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
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nextbuy.errors import DataError, NotFoundError
from nextbuy.store.records import KeyRecord, open_key_table

SCOPES = ("read", "write", "admin")
PREFIX = "nbk"


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
    """Create, list, revoke and verify keys kept in the store's key table."""

    def __init__(self, path: Path) -> None:
        self._table = open_key_table(path)
        self._lock = threading.Lock()
        self._keys: dict[str, _Stored] | None = None

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
        record = KeyRecord(
            key_id, name.strip(), tuple(sorted(chosen)), salt, _digest(salt, secret), created
        )
        self._table.add(record)
        self.refresh()
        return ApiKey(key_id, name.strip(), chosen, created), f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        return [stored.key for stored in self._read().values()]

    def revoke(self, key_id_or_name: str) -> int:
        """Delete keys by id or by name; how many went."""
        removed = self._table.remove(key_id_or_name)
        self.refresh()
        if removed == 0:
            raise NotFoundError(f"no API key with id or name {key_id_or_name!r}")
        return removed

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
        return {
            record.key_id: _Stored(
                ApiKey(record.key_id, record.name, frozenset(record.scopes), record.created_at),
                record.salt,
                record.digest,
            )
            for record in self._table.all()
        }
