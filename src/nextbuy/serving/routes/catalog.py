"""PUT/DELETE /v1/items/{item_id} (scope: write): the store and the live catalogue together."""

from __future__ import annotations

import json
import time
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from nextbuy.errors import DataError, NotFoundError
from nextbuy.ingest.run import frame_as_text
from nextbuy.ingest.validate import check_items
from nextbuy.rules.catalog import ItemCatalog
from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.schemas import ItemIn, Stored
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["catalog"])

ItemId = Annotated[str, Path(min_length=1, max_length=256)]


@router.put("/items/{item_id}", response_model=Stored)
async def put_item(request: Request, item_id: ItemId, body: ItemIn) -> JSONResponse:
    """Add or update a product. A new product can be recommended at once (new-arrival slot,
    trending and category lists); fields left out keep their stored values."""
    state: ServingState = request.app.state.serving
    row = _row(state, item_id, body)
    await run_in_threadpool(_store_item, state, row)
    return JSONResponse({"item_id": item_id, "stored": True})


@router.delete("/items/{item_id}", status_code=204)
async def delete_item(request: Request, item_id: ItemId) -> Response:
    """Remove a product: it is never recommended again (404 if unknown)."""
    state: ServingState = request.app.state.serving
    await run_in_threadpool(_delete_item, state, item_id)
    return Response(status_code=204)


def _row(state: ServingState, item_id: str, body: ItemIn) -> pd.DataFrame:
    values = body.model_dump(exclude_unset=True)
    if not _known(state, item_id):
        # a new item: created now (a new arrival), attributes {} as for an imported item
        values.setdefault("created_at", pd.Timestamp(time.time(), unit="s", tz="UTC"))
        values.setdefault("attributes", {})
    for name in ("tags", "attributes"):
        if name in values and values[name] is not None:
            values[name] = json.dumps(values[name])
    frame = pd.DataFrame([{"item_id": item_id, **values}])
    if "created_at" in frame:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    checked = check_items(frame_as_text(frame), first_line=0)
    if len(checked.rejected):
        raise DataError(f"item {item_id!r}: {checked.rejected['reason'].iloc[0]}")
    valid = checked.valid.drop(columns="line")
    # check_items fills every column; keep only what the caller sent, as the store does.
    keep = ["item_id", *[c for c in valid.columns if c in values]]
    return valid[keep]


def _known(state: ServingState, item_id: str) -> bool:
    live = state.live
    return live is not None and item_id in live.catalog.index


def _store_item(state: ServingState, row: pd.DataFrame) -> None:
    state.store.upsert_items(row)
    catalog_row = row.copy()
    for name in ("tags", "attributes"):
        if name in catalog_row:
            catalog_row[name] = catalog_row[name].map(lambda v: json.loads(v) if v else None)
    state.change_catalog(lambda catalog: catalog.upsert(catalog_row))


def _delete_item(state: ServingState, item_id: str) -> None:
    deleted = state.store.delete_item(item_id)
    live = state.live
    listed = live is not None and item_id in live.catalog.index
    if not deleted and not listed:
        raise NotFoundError(f"item {item_id!r} not found")
    state.change_catalog(lambda catalog: _without(catalog, item_id))


def _without(catalog: ItemCatalog, item_id: str) -> ItemCatalog:
    return catalog.remove(item_id) if item_id in catalog.index else catalog
