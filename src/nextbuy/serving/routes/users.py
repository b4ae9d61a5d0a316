"""PUT/DELETE /v1/users/{user_id} (scope: write): profiles, consent, onboarding, erasure."""

from __future__ import annotations

import json
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from nextbuy.errors import DataError
from nextbuy.ingest.run import frame_as_text
from nextbuy.ingest.validate import check_users
from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.schemas import Stored, UserIn
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["users"])

UserId = Annotated[str, Path(min_length=1, max_length=256)]


@router.put("/users/{user_id}", response_model=Stored)
async def put_user(request: Request, user_id: UserId, body: UserIn) -> JSONResponse:
    """Create or replace a profile: attributes, consent (false: non-personalised results
    only) and onboarding answers (preferred categories, brands, price range) that shape a
    new customer's first recommendations."""
    state: ServingState = request.app.state.serving
    row = _row(user_id, body)
    await run_in_threadpool(state.store.upsert_users, row)
    state.profiles.put(user_id, row.iloc[0].to_dict())
    return JSONResponse({"user_id": user_id, "stored": True})


@router.delete("/users/{user_id}", status_code=204)
async def delete_user(request: Request, user_id: UserId) -> Response:
    """Erase a user: events and profile from the store, and everything the server holds in
    memory about them; the trained model stops personalising from their past at once."""
    state: ServingState = request.app.state.serving
    await run_in_threadpool(_erase, state, user_id)
    return Response(status_code=204)


def _row(user_id: str, body: UserIn) -> pd.DataFrame:
    values = body.model_dump()
    frame = pd.DataFrame(
        [
            {
                "user_id": user_id,
                "attributes": json.dumps(values["attributes"]),
                "consent": values["consent"],
                "onboarding": None
                if values["onboarding"] is None
                else json.dumps(values["onboarding"]),
                "created_at": values["created_at"],
            }
        ]
    )
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    checked = check_users(frame_as_text(frame), first_line=0)
    if len(checked.rejected):
        raise DataError(f"user {user_id!r}: {checked.rejected['reason'].iloc[0]}")
    return checked.valid.drop(columns="line")


def _erase(state: ServingState, user_id: str) -> None:
    # Memory first: from here on no answer personalises from this user, even if the
    # store is slow to delete.
    state.forget_user(user_id)
    state.store.erase_user(user_id)
