"""What shoppers did since the serving model was trained, kept in memory per user and session.

The model scores a history row; the row a request scores is the trained row plus these
events, so a purchase changes the very next answer without retraining. State is bounded:
the most recent `max_events` events per shopper and the `max_keys` most recently active
shoppers (least recently active ones are forgotten first; their events stay in the store and
reach the model at the next training).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass

USER = "u:"
SESSION = "s:"


def shopper_key(user_id: str | None, session_id: str | None) -> str | None:
    """The one key a shopper's candidates are generated and kept under: the user, else the
    anonymous session."""
    if user_id is not None:
        return USER + user_id
    return None if session_id is None else SESSION + session_id


def split_key(who: str) -> tuple[str | None, str | None]:
    """(user id, session id) of a `shopper_key`."""
    if who.startswith(USER):
        return who.removeprefix(USER), None
    return None, who.removeprefix(SESSION)


@dataclass(frozen=True, slots=True)
class OnlineEvent:
    item_id: str
    event_type: str
    weight: float
    ts_ms: int
    key: int  # the store's event key: the same event arriving twice counts once


class _Activity:
    __slots__ = ("events", "keys")

    def __init__(self, max_events: int) -> None:
        self.events: deque[OnlineEvent] = deque(maxlen=max_events)
        self.keys: set[int] = set()

    def add(self, event: OnlineEvent) -> None:
        if event.key in self.keys:
            return
        if len(self.events) == self.events.maxlen:
            self.keys.discard(self.events[0].key)
        self.events.append(event)
        self.keys.add(event.key)


def _time_of(event: OnlineEvent) -> int:
    return event.ts_ms


class OnlineState:
    """Recent events per user ("u:<id>") and per anonymous session ("s:<id>"); thread-safe."""

    def __init__(self, max_keys: int = 200_000, max_events: int = 200) -> None:
        self.max_keys = max_keys
        self.max_events = max_events
        self._lock = threading.Lock()
        self._by_key: OrderedDict[str, _Activity] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, who: str, events: Iterable[OnlineEvent]) -> None:
        with self._lock:
            activity = self._by_key.get(who)
            if activity is None:
                activity = self._by_key[who] = _Activity(self.max_events)
                if len(self._by_key) > self.max_keys:
                    self._by_key.popitem(last=False)
            else:
                self._by_key.move_to_end(who)
            for event in events:
                activity.add(event)
            if not activity.events:
                del self._by_key[who]

    def events(self, who: str, since_ms: int | None = None) -> list[OnlineEvent]:
        """Events of one shopper, oldest first; only those after `since_ms` when given."""
        activity = self._by_key.get(who)
        if activity is None:
            return []
        with self._lock:
            found = list(activity.events)
        if since_ms is not None:
            found = [e for e in found if e.ts_ms > since_ms]
        # events arrive roughly in time order; a late one (client clock, seeding) is rare
        found.sort(key=_time_of)
        return found

    def forget(self, who: str) -> bool:
        with self._lock:
            return self._by_key.pop(who, None) is not None

    def has(self, who: str) -> bool:
        return who in self._by_key

    def user_ids(self) -> list[str]:
        """The customers (not anonymous sessions) with recent events, oldest activity first."""
        with self._lock:
            keys = list(self._by_key)
        return [user for user, _ in map(split_key, keys) if user is not None]
