"""POST /v1/events (scope: write): stored in the store before the answer, then live at once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from nextbuy.serving.events import EventErrors, parse_body, validate
from nextbuy.serving.responses import JSONResponse, problem
from nextbuy.serving.schemas import EventsAccepted
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["events"])

EXAMPLE = {"user_id": "17850", "item_id": "85123A", "event_type": "purchase"}


@router.post(
    "/events",
    response_model=EventsAccepted,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/EventIn"},
                            {"$ref": "#/components/schemas/EventBatch"},
                        ]
                    },
                    "example": EXAMPLE,
                }
            },
        }
    },
)
async def post_events(request: Request) -> Any:
    """One event, or {"events": [...]}. Validated like a file import; a batch is stored
    whole or refused whole (422 naming each bad event and why). The next recommendation
    for that user or session reflects it."""
    state: ServingState = request.app.state.serving
    try:
        events, _ = parse_body(await request.body(), state.settings.serving.events_batch_max)
        rows = validate(events, state.settings)
    except EventErrors as exc:
        return problem(422, exc.detail)
    result = await run_in_threadpool(state.store.append_events, rows)
    state.add_online(rows, generate_ahead=True)
    for event_type, count in Counter(rows["event_type"].tolist()).items():
        state.metrics.events.labels(str(event_type)).inc(count)
    return JSONResponse(
        {"accepted": len(rows), "stored": result.stored, "duplicates": result.duplicates}
    )
