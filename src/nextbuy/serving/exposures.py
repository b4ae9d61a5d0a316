"""The exposure log: every served list, written to the store off the request path.

A request turns its list into rows of ``exposures``, ``exposure_items`` and
``exposure_arms`` (a few tuples) and appends them to a deque (an atomic operation under the
GIL); a background thread writes the pending rows in one transaction every
``flush_seconds`` (default 0.1 s). Durability window: a list reaches the store within
``flush_seconds`` plus one write in normal operation, and `stop()` (server shutdown, SIGINT
or SIGTERM) writes whatever is pending before the process exits; only a hard kill
(SIGKILL, power loss) can lose the lists of the last window.

Readers that need every list served so far (the results route, a bandit recomputation,
an erasure) call `flush()` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

from nextbuy.store.records import open_exposure_table

BACKGROUND_NICE = 10
log = logging.getLogger("nextbuy.serving")

# Beyond this many lists waiting (the store unwritable for a long time) the oldest are
# dropped and counted, so a broken disk cannot exhaust the server's memory.
MAX_PENDING = 200_000


@dataclass(frozen=True, slots=True)
class Arm:
    """The experiment arm a list was served (or computed, for a shadow) under."""

    experiment: str
    variant: str
    unit_id: str


# A served list as flat tuples of plain values: its exposure row; its items' positions, ids
# and scores; its arms' experiment, variant and unit, three values each. Python's collector
# stops tracking a tuple once its members are untracked, here within the two young
# generations, so lists waiting while requests hold the core (tens of thousands at full
# load, measured) add nothing to the full collections a request may pay for.
Pending = tuple[tuple, tuple, tuple, tuple, tuple]


class ExposureLog:
    def __init__(self, store_path: Path, flush_seconds: float = 0.1) -> None:
        self.store_path = Path(store_path)
        self.flush_seconds = flush_seconds
        self._pending: deque[Pending] = deque()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._table = open_exposure_table(self.store_path)
        self.written = 0
        self.dropped = 0

    # -- request path --------------------------------------------------------------------------
    def record(
        self,
        body: dict[str, Any],
        session_id: str | None,
        route: str,
        arms: Sequence[Arm] = (),
        shown: bool = True,
        shadow_of: str | None = None,
    ) -> None:
        """Queue one served list."""
        served_at = time.time_ns() // 1_000_000
        self._pending.append(list_rows(served_at, body, session_id, route, arms, shown, shadow_of))

    # -- background writer ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="nextbuy-exposures", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Write everything pending, then stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
        with self._flush_lock:
            self._table.close()

    def _run(self) -> None:
        background_priority()
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:
                log.exception("writing exposures failed; they stay queued")

    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write every queued list now; returns how many were written."""
        with self._flush_lock:
            batch: list[Pending] = []
            while self._pending:
                batch.append(self._pending.popleft())
            if not batch:
                return 0
            try:
                self._write(batch)
            except Exception:
                self._requeue(batch)
                raise
            self.written += len(batch)
            return len(batch)

    def _requeue(self, batch: list[Pending]) -> None:
        self._pending.extendleft(reversed(batch))
        excess = len(self._pending) - MAX_PENDING
        for _ in range(max(excess, 0)):
            self._pending.popleft()
            self.dropped += 1

    def _write(self, batch: list[Pending]) -> None:
        self._table.append(*rows(batch))


def background_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux: nice is per thread), so that a
    batch of writes yields the core to requests instead of queueing them behind it."""
    # not Linux, or not permitted: the writer keeps the process's priority
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def list_rows(
    served_at: int,
    body: dict[str, Any],
    session_id: str | None,
    route: str,
    arms: Sequence[Arm],
    shown: bool,
    shadow_of: str | None,
) -> Pending:
    """One served list, as `rows` reads it."""
    rec_id = body["recommendation_id"]
    user = body.get("user_id")
    listed = body["items"]
    exposure = (
        rec_id, user, session_id, body["placement"], route, body.get("model_version"),
        int(shown), shadow_of, int(bool(body.get("shuffled"))), served_at, len(listed),
    )  # fmt: skip
    return (
        exposure,
        tuple(entry["position"] for entry in listed),
        tuple(entry["item_id"] for entry in listed),
        tuple(entry.get("score") for entry in listed),
        tuple(value for arm in arms for value in (arm.experiment, arm.variant, arm.unit_id)),
    )


def rows(batch: Sequence[Pending]) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Table rows of pending lists: exposures, exposure_items, exposure_arms."""
    exposures: list[tuple] = []
    items: list[tuple] = []
    arms: list[tuple] = []
    for exposure, positions, item_ids, scores, list_arms in batch:
        exposures.append(exposure)
        rec_id, user, shown, served_at = exposure[0], exposure[1], exposure[6], exposure[9]
        items.extend(zip(repeat(rec_id), positions, item_ids, scores, repeat(user), strict=False))
        arms.extend(
            (experiment, rec_id, variant, unit_id, user, shown, served_at)
            for experiment, variant, unit_id in zip(*[iter(list_arms)] * 3, strict=True)
        )
    return exposures, items, arms
