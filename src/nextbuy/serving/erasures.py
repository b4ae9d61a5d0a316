"""Users erased since a model was trained: the model must not personalise from their past.

Erasure deletes a user's events and profile from the store at once, but a trained model
still holds the user's history row until the next training. The server therefore keeps a
suppression list of erased users and treats them as unknown wherever the serving model was
trained before their erasure. The list holds a SHA-256 of the user id, not the id itself,
in its own table of the store, so it survives a restart.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from nextbuy.store.records import open_erasure_table


def user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


class Erasures:
    """user hash -> when the user was erased (unix ms), kept in the store's erasure table."""

    def __init__(self, path: Path) -> None:
        self._table = open_erasure_table(path)
        self._lock = threading.Lock()
        self._erased: dict[str, int] = self._table.all()

    def record(self, user_id: str) -> None:
        digest, now = user_hash(user_id), int(time.time() * 1000)
        self._table.record(digest, now)
        with self._lock:
            self._erased[digest] = now

    def suppressed(self, user_id: str, trained_at_ms: int) -> bool:
        """True when this user was erased after the model was trained."""
        if not self._erased:
            return False
        erased_at = self._erased.get(user_hash(user_id))
        return erased_at is not None and erased_at >= trained_at_ms
