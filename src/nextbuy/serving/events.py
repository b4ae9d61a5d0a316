"""Events sent to the API, validated by the very checks a file import runs.

The body is one event object or {"events": [...]}. Pydantic checks the JSON shape (field
names and types); the rows then go through `ingest.validate.check_interactions` as text,
exactly like a CSV line, so an unknown event type or a missing user is refused with the
same reason through either door. A batch is stored whole or not at all.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nextbuy.config import Settings
from nextbuy.data.schema import INTERACTION_COLUMNS
from nextbuy.ingest.run import API_KEY_BIT, event_keys
from nextbuy.ingest.validate import MAX_ID_LENGTH, MS_THRESHOLD, check_interactions

# The ISO 8601 form trackers send (date, time, optional fraction and zone): read here as the
# import's parser reads it; any other text takes the import's parser itself
PLAIN_ISO = re.compile(
    r"(19[7-9]\d|[2-9]\d{3})-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)?"
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Scalar = str | int | float
# Fields a validation reason may name, most specific first.
REASON_FIELDS = (
    "user_id",
    "session_id",
    "item_id",
    "event_type",
    "timestamp",
    "quantity",
    "context",
    "order_id",
    "recommendation_id",
    "event_id",
    "value",
)


class EventIn(BaseModel):
    """One interaction as the API takes it; `timestamp` defaults to the time of arrival."""

    model_config = ConfigDict(extra="forbid")

    user_id: Scalar | None = Field(default=None, description="Who; or give session_id.")
    session_id: Scalar | None = Field(default=None, description="Anonymous visitor's session.")
    item_id: Scalar = Field(description=f"Product id (at most {MAX_ID_LENGTH} characters).")
    event_type: str = Field(description="view, click, add_to_cart, purchase, ... or custom.")
    timestamp: Scalar | None = Field(
        default=None, description="ISO 8601 or unix seconds/milliseconds; default: now."
    )
    value: float | None = None
    quantity: float | None = None
    order_id: Scalar | None = None
    recommendation_id: str | None = Field(
        default=None, description="The recommendation_id this event follows from, if any."
    )
    context: dict[str, Any] | None = None
    event_id: Scalar | None = Field(default=None, description="For idempotent re-sends.")


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1)


class EventErrors(Exception):
    """Field-level problems, in FastAPI's 422 detail shape."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(detail)} problem(s)")
        self.detail = detail


def parse_body(body: bytes, max_events: int) -> tuple[list[EventIn], bool]:
    """(events, batched) from a request body; EventErrors on anything malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventErrors([_problem(["body"], f"not valid JSON: {exc}", "json_invalid")]) from None
    batched = isinstance(data, dict) and "events" in data
    try:
        if batched:
            events = EventBatch.model_validate(data).events
        else:
            events = [EventIn.model_validate(data)]
    except ValidationError as exc:
        prefix = ["body"] if batched else ["body", "events", 0]
        raise EventErrors(
            [_problem(prefix + list(e["loc"]), e["msg"], e["type"]) for e in exc.errors()]
        ) from None
    if len(events) > max_events:
        raise EventErrors(
            [_problem(["body", "events"], f"at most {max_events} events per request", "too_long")]
        )
    return events, batched


def validate(events: list[EventIn], settings: Settings) -> pd.DataFrame:
    """Typed rows ready for `store.append_events`, or EventErrors naming each bad event.

    Clean events (the usual case) take a per-event check that accepts only what
    `check_interactions` accepts and types them as it would (tests hold the two equal);
    anything else goes through `check_interactions` itself, which also words the reasons.
    Its vectorised checks cost ~30 ms per call whatever the batch size, too much for every
    request of a storefront's tracking.
    """
    now_ms = int(time.time() * 1000)
    valid = clean_rows(events, settings, now_ms)
    if valid is None:
        valid = checked_rows(events, settings, now_ms)
    valid["event_key"] = keys_for(valid)  # the frame is this call's own: no copy (~0.2 ms)
    return valid


def checked_rows(events: list[EventIn], settings: Settings, now_ms: int) -> pd.DataFrame:
    """The import's validation, on the events as text rows (as a CSV would give them)."""
    frame = pd.DataFrame([_as_text(e, now_ms) for e in events], columns=list(INTERACTION_COLUMNS))
    checked = check_interactions(
        frame.astype("string"),
        first_line=0,
        known_event_types=settings.events.known_types(),
        negative_quantity_allowed=set(settings.events.negative_quantity_allowed),
    )
    if len(checked.rejected):
        raise EventErrors(
            [
                _problem(["body", "events", int(line), _field_of(reason)], reason, "value_error")
                for line, reason in zip(
                    checked.rejected["line"], checked.rejected["reason"], strict=True
                )
            ]
        )
    return checked.valid.drop(columns="line")


def clean_rows(events: list[EventIn], settings: Settings, now_ms: int) -> pd.DataFrame | None:
    """The rows `check_interactions` would give, when every event is plainly valid; else None."""
    known = settings.events.known_types()
    negative_ok = set(settings.events.negative_quantity_allowed)
    columns: dict[str, list[Any]] = {name: [] for name in INTERACTION_COLUMNS}
    for event in events:
        row = _clean(event, known, negative_ok, now_ms)
        if row is None:
            return None
        for name, value in zip(INTERACTION_COLUMNS, row, strict=True):
            columns[name].append(value)
    # object columns, as check_interactions gives them (no string inference per request);
    # built whole as object, then the three numeric columns replaced: a Series per column
    # and their index union cost twice as much for a single event
    frame = pd.DataFrame(columns, dtype=object)
    frame["timestamp"] = pd.array(columns["timestamp"], dtype="Int64")
    frame["value"] = np.asarray(columns["value"], dtype=np.float64)
    frame["quantity"] = np.asarray(columns["quantity"], dtype=np.float64)
    return frame


def _clean(
    event: EventIn, known: set[str], negative_ok: set[str], now_ms: int
) -> tuple[Any, ...] | None:
    """One event's typed values in INTERACTION_COLUMNS order, or None if in any doubt."""
    ids = {}
    for name in ("user_id", "item_id", "session_id", "order_id", "recommendation_id", "event_id"):
        value = getattr(event, name)
        if value is None:
            ids[name] = None
            continue
        if isinstance(value, bool):
            return None
        text = _scalar_text(value).strip()
        if not text or len(text) > MAX_ID_LENGTH:
            return None
        ids[name] = text
    kind = event.event_type.strip()
    if ids["item_id"] is None or kind not in known:
        return None
    if ids["user_id"] is None and ids["session_id"] is None:
        return None
    timestamp = _clean_time(event.timestamp, now_ms)
    value, quantity = _clean_number(event.value), _clean_number(event.quantity)
    if timestamp is None or value is False or quantity is False:
        return None
    if quantity is not None and quantity < 0 and kind not in negative_ok:
        return None
    context = None
    if event.context is not None:
        context = json.dumps(event.context, separators=(",", ":"))
    return (
        ids["user_id"],
        ids["item_id"],
        kind,
        timestamp,
        np.nan if value is None else value,
        np.nan if quantity is None else quantity,
        ids["session_id"],
        ids["order_id"],
        ids["recommendation_id"],
        context,
        ids["event_id"],
    )


def _clean_time(value: Scalar | None, now_ms: int) -> int | None:
    """UTC ms as parse_times reads numbers (>= 1e11: ms, else s); None: not plainly a time."""
    if value is None:
        return now_ms
    if isinstance(value, str):
        return _plain_iso_millis(value)
    if isinstance(value, bool):
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    millis = number if abs(number) >= MS_THRESHOLD else number * 1e3
    return int(np.round(millis))


def _plain_iso_millis(text: str) -> int | None:
    """UTC ms of a plain ISO 8601 time, as the import gives it (no zone: UTC; truncated to the
    ms); None for any other text. The import's parser costs 40-50 ms a call, on the event loop."""
    if PLAIN_ISO.fullmatch(text) is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:  # a 13th month, a 25th hour: the import words the reason
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)  # floors, as the import truncates


def _clean_number(value: float | None) -> float | bool | None:
    """The number, None when absent, False when not plainly a finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not math.isfinite(value):
        return False
    return float(value)


class ApiKeys:
    """Keys for API events without an event_id: increasing with time, so SQLite appends them
    at the end of the events table instead of writing a random page per event (measured
    ~70 µs an event at a million rows), and unique: (ms << 19) | process tag | counter.
    """

    TAG_BITS, COUNT_BITS = 8, 11

    def __init__(self) -> None:
        self._tag = secrets.randbelow(1 << self.TAG_BITS) << self.COUNT_BITS
        self._ms = 0
        self._count = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> np.ndarray:
        with self._lock:
            keys = np.empty(n, np.int64)
            for i in range(n):
                keys[i] = self._next()
            return keys

    def _next(self) -> int:
        now = max(int(time.time() * 1000), self._ms)
        if now == self._ms and self._count == 1 << self.COUNT_BITS:
            now += 1  # this millisecond's keys are spent: borrow the next one's
        if now != self._ms:
            self._ms, self._count = now, 0
        key = API_KEY_BIT | (now << (self.TAG_BITS + self.COUNT_BITS)) | self._tag | self._count
        self._count += 1
        return key


API_KEYS = ApiKeys()


def keys_for(valid: pd.DataFrame) -> np.ndarray:
    """Store keys: a hash of event_id when given (a re-send is a duplicate), else a fresh
    API key (file imports key by (file, line), which would make two API calls collide)."""
    fresh = pd.isna(valid["event_id"].to_numpy())  # Series.isna costs ~0.2 ms more per call
    if fresh.all():  # the usual case for tracking: no event ids to hash
        return API_KEYS.take(len(fresh))
    keys = event_keys(valid.assign(line=np.arange(len(valid))), 0)
    if fresh.any():
        keys[fresh] = API_KEYS.take(int(fresh.sum()))
    return keys


def _as_text(event: EventIn, now_ms: int) -> dict[str, str | None]:
    row: dict[str, str | None] = {}
    for name in INTERACTION_COLUMNS:
        value = getattr(event, name)
        if name == "timestamp" and value is None:
            value = now_ms
        if value is None:
            row[name] = None
        elif name == "context":
            row[name] = json.dumps(value, separators=(",", ":"))
        else:
            row[name] = _scalar_text(value)
    return row


def _scalar_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _field_of(reason: str) -> str:
    """The field a validation reason names, for the error's loc."""
    for name in REASON_FIELDS:
        if name in reason or name.replace("_", " ") in reason:
            return name
    return "event"


def _problem(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}
