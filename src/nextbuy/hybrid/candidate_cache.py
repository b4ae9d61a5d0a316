"""Candidate sets generated ahead of the request, keyed by exactly what generation reads.

Candidate generation (the seven generators and their merge) is the costly half of the
per-request pipeline and depends only on the shopper's events: the trained history row and
what they did since the cutoff. Ranking depends on the request too (time, device, placement).
So a server generates a shopper's candidates when their event arrives, off the request path,
together with what the features read of the shopper's events (`online.EventFacts`), and the
request ranks them. An entry is used only when its key — the trained user row and the fresh
events' items, weights, times and purchase flags — equals the request's, so a cached set is
the set the request would have generated; anything else is a miss and the request generates
inline.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

GenerationKey = tuple[int, bytes, bytes, bytes, bytes]
Kept = TypeVar("Kept")


@dataclass(frozen=True)
class _Entry(Generic[Kept]):
    key: GenerationKey
    generated: Kept


class CandidateCache(Generic[Kept]):
    """What was generated (history rows, candidates, event facts) for the `max_entries`
    most recently active shoppers; thread-safe."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry[Kept]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, who: str, key: GenerationKey) -> Kept | None:
        with self._lock:
            entry = self._entries.get(who)
            if entry is None or entry.key != key:
                return None
            self._entries.move_to_end(who)
            return entry.generated

    def put(self, who: str, key: GenerationKey, generated: Kept) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[who] = _Entry(key, generated)
            self._entries.move_to_end(who)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, who: str) -> bool:
        with self._lock:
            return self._entries.pop(who, None) is not None
