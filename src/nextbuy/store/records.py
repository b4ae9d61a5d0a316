"""Record tables kept beside the events: API keys, erasures, served lists, experiments and
their bandit allocations.

What a key means (scopes, hashing, verification), what an erasure suppresses, when served
lists are written and how experiments merge with the configuration belong to serving and
experiments; how the rows are kept belongs here, behind a protocol per table, so another
backend implements the same few methods and no caller sees SQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nextbuy.errors import StoreError

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


class ExposureTable(Protocol):
    def append(
        self, exposures: Sequence[tuple], items: Sequence[tuple], arms: Sequence[tuple]
    ) -> None:
        """Rows of served lists (`exposures`, `exposure_items`, `exposure_arms` columns in
        order), written all or none (a StoreError, and nothing kept, when a row is bad); a
        row already kept is left as it is."""
        ...

    def close(self) -> None: ...


class ExperimentTable(Protocol):
    def all(self) -> list[tuple[str, str, str]]:
        """(name, configuration JSON, source) of every stored experiment, oldest first."""
        ...

    def put(self, name: str, config: str, source: str, insert: bool, at_ms: int) -> None:
        """Insert a new experiment (`insert`; a taken name raises StoreError), or
        insert-or-update its configuration (the source of an existing row stays)."""
        ...


class AllocationTable(Protocol):
    """A bandit's traffic shares over time, per experiment."""

    def add(
        self, experiment: str, at_ms: int, weights: dict, successes: dict, trials: dict
    ) -> None: ...

    def history(self, experiment: str) -> list[tuple[int, dict[str, float]]]:
        """(computed at, unix ms; variant -> share) of every allocation, oldest first."""
        ...


def open_key_table(path: Path) -> KeyTable:
    return _SQLiteKeyTable(path)


def open_erasure_table(path: Path) -> ErasureTable:
    return _SQLiteErasureTable(path)


def open_exposure_table(path: Path) -> ExposureTable:
    return _SQLiteExposureTable(path)


def open_experiment_table(path: Path) -> ExperimentTable:
    return _SQLiteExperimentTable(path)


def open_allocation_table(path: Path) -> AllocationTable:
    return _SQLiteAllocationTable(path)


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


class _SQLiteExposureTable:
    """The store's exposure tables, written on one connection the writer thread keeps."""

    EXPOSURE_SQL = "INSERT OR IGNORE INTO exposures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ITEM_SQL = "INSERT OR IGNORE INTO exposure_items VALUES (?, ?, ?, ?, ?)"
    ARM_SQL = "INSERT OR IGNORE INTO exposure_arms VALUES (?, ?, ?, ?, ?, ?, ?)"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def append(
        self, exposures: Sequence[tuple], items: Sequence[tuple], arms: Sequence[tuple]
    ) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(self.EXPOSURE_SQL, exposures)
            conn.executemany(self.ITEM_SQL, items)
            if arms:
                conn.executemany(self.ARM_SQL, arms)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise StoreError(f"{self.path}: served lists not written ({exc})") from exc
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _SQLiteExperimentTable:
    """The store's `experiments` table (the store creates it: opening it here would cost a
    schema pass per call)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn

    def all(self) -> list[tuple[str, str, str]]:
        if not self.path.exists():
            return []
        with self._connect() as conn:
            try:
                rows = conn.execute(
                    "SELECT name, config, source FROM experiments ORDER BY created_at, name"
                ).fetchall()
            except sqlite3.OperationalError:
                return []  # a store from before experiments existed: nothing stored yet
        return [(str(name), str(config), str(source)) for name, config, source in rows]

    def put(self, name: str, config: str, source: str, insert: bool, at_ms: int) -> None:
        sql = "INSERT INTO experiments VALUES (?, ?, ?, ?, ?)"
        if not insert:
            sql += (
                " ON CONFLICT(name) DO UPDATE "
                "SET config = excluded.config, updated_at = excluded.updated_at"
            )
        try:
            with self._connect() as conn:
                conn.execute(sql, (name, config, source, at_ms, at_ms))
        except sqlite3.IntegrityError:
            raise StoreError(f"experiment {name!r} is stored already") from None


class _SQLiteAllocationTable:
    """The store's `experiment_allocations` table (created with the store)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def add(
        self, experiment: str, at_ms: int, weights: dict, successes: dict, trials: dict
    ) -> None:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO experiment_allocations VALUES (?, ?, ?, ?, ?)",
                (experiment, at_ms, json.dumps(weights), json.dumps(successes), json.dumps(trials)),
            )

    def history(self, experiment: str) -> list[tuple[int, dict[str, float]]]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            rows = conn.execute(
                "SELECT computed_at, weights FROM experiment_allocations WHERE experiment = ? "
                "ORDER BY computed_at",
                (experiment,),
            ).fetchall()
        return [(int(at), json.loads(weights)) for at, weights in rows]
