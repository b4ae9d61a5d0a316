"""Events sent to the API, validated by the very checks a file import runs.

The body is one event object or {"events": [...]}. Pydantic checks the JSON shape (field
names and types); the rows then go through `ingest.validate.check_interactions` as text,
exactly like a CSV line, so an unknown event type or a missing user is refused with the
same reason through either door. A batch is stored whole or not at all.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nextbuy.config import Settings
from nextbuy.ingest.run import HASHED_KEY_BIT, event_keys
from nextbuy.ingest.validate import MAX_ID_LENGTH, check_interactions
from nextbuy.schema import INTERACTION_COLUMNS

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
    """Typed rows ready for `store.append_events`, or EventErrors naming each bad event."""
    now_ms = int(time.time() * 1000)
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
    valid = checked.valid
    return valid.assign(event_key=keys_for(valid)).drop(columns="line")


def keys_for(valid: pd.DataFrame) -> np.ndarray:
    """Store keys: a hash of event_id when given (a re-send is a duplicate), else random.

    A random 62-bit key below the hashed range cannot be mistaken for a re-send; file
    imports key by (file, line), which would make two API calls collide.
    """
    keys = event_keys(valid, 0)
    fresh = valid["event_id"].isna().to_numpy()
    if fresh.any():
        keys[fresh] = [secrets.randbelow(HASHED_KEY_BIT) for _ in range(int(fresh.sum()))]
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
