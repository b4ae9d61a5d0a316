"""Candidates generated when a shopper's event arrives, so their next request only ranks.

A view or a purchase reaches the server a page before the shopper asks for recommendations.
This worker generates that shopper's candidates (through the model's own request path: the
hybrid's generators and merge) in the meantime; the request then ranks them with its own
context. A shopper is a user, or an anonymous session for events that name no user (keys as
in `online.py`). Queued shoppers are coalesced (a burst of events costs one generation), the
newest events are read when the shopper's turn comes, and the worker runs at a lower priority
and yields between generators, so requests keep the core. A request that arrives first
generates inline, as without this worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from nextbuy.serving.exposures import background_priority
from nextbuy.serving.online import split_key

if TYPE_CHECKING:
    from nextbuy.serving.state import ServingState

log = logging.getLogger(__name__)
MAX_QUEUED = 100_000  # users waiting; the oldest are dropped past it (they generate inline)


def _yield_interpreter() -> None:
    time.sleep(0)  # releases the GIL, so a waiting request thread takes it now


class CandidateRefresher:
    def __init__(self, state: ServingState) -> None:
        self.state = state
        self._queue: OrderedDict[str, None] = OrderedDict()
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="nextbuy-candidate-refresh", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def notify(self, shoppers: Iterable[str]) -> None:
        """These shoppers (online keys) have new events: generate their candidates soon."""
        live = self.state.live
        if live is None or self.state.settings.serving.candidate_cache <= 0:
            return
        if live.model.model.request_path() is None:
            return
        with self._wake:
            for who in shoppers:
                self._queue[who] = None
                self._queue.move_to_end(who)
            while len(self._queue) > MAX_QUEUED:
                self._queue.popitem(last=False)
            self.state.metrics.candidate_queue.set(len(self._queue))
            self._wake.notify()

    def _run(self) -> None:
        background_priority()
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                who, _ = self._queue.popitem(last=False)
                self.state.metrics.candidate_queue.set(len(self._queue))
            try:
                self._generate(who, _yield_interpreter)
            except Exception:
                log.exception("generating candidates for a shopper failed")

    def _generate(self, who: str, between: Callable[[], None]) -> None:
        state = self.state
        live = state.live
        if live is None:
            return
        path = live.model.model.request_path()
        if path is None:
            return
        user_id, session_id = split_key(who)
        shopper = state.shopper(live, user_id, session_id)
        if not (shopper.personal and shopper.has_history):
            return
        generated = path.prepare(who, shopper, between)
        # erased while this ran (a session: with its user): keep nothing of theirs
        if user_id is not None:
            erased = state.erasures.suppressed(user_id, live.model.trained_at_ms)
        else:
            erased = not state.online.has(who)
        if erased:
            path.forget(who)
        elif generated:
            state.metrics.candidate_sets.labels("generated_ahead").inc()

    def forget(self, who: str) -> None:
        """An erased shopper: not generated any more."""
        with self._wake:
            self._queue.pop(who, None)
