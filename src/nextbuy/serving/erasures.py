"""Users erased since a model was trained: the model must not personalise from their past.

Erasure deletes a user's events and profile from the store at once, but a trained model
still holds the user's history row until the next training. The server therefore keeps a
suppression list of erased users and treats them as unknown wherever the serving model was
trained before their erasure. The list holds a SHA-256 of the user id, not the id itself,
in its own table of the store's file, so it survives a restart.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

TABLE_SQL = """
CREATE TABLE IF NOT EXISTS serving_erasures (
    user_hash TEXT PRIMARY KEY,
    erased_at INTEGER NOT NULL
)
"""


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


class Erasures:
    """user hash -> when the user was erased (unix ms)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        with self._connect() as conn:
            conn.execute(TABLE_SQL)
            rows = conn.execute("SELECT user_hash, erased_at FROM serving_erasures").fetchall()
        self._erased: dict[str, int] = dict(rows)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as conn, conn:
            yield conn

    def record(self, user_id: str) -> None:
        digest, now = user_hash(user_id), int(time.time() * 1000)
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO serving_erasures VALUES (?, ?) "
                "ON CONFLICT(user_hash) DO UPDATE SET erased_at = excluded.erased_at",
                (digest, now),
            )
        with self._lock:
            self._erased[digest] = now

    def suppressed(self, user_id: str, trained_at_ms: int) -> bool:
        """True when this user was erased after the model was trained."""
        if not self._erased:
            return False
        erased_at = self._erased.get(user_hash(user_id))
        return erased_at is not None and erased_at >= trained_at_ms
