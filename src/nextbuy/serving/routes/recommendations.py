"""Recommendation routes (scope: read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from nextbuy.serving import recommend
from nextbuy.serving.auth import require
from nextbuy.serving.recommend import Ask
from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.schemas import CartRequest, Recommendations, RerankRequest
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["recommendations"], dependencies=[Depends(require("read"))])

UserId = Annotated[str, Path(min_length=1, max_length=256)]
ItemId = Annotated[str, Path(min_length=1, max_length=256)]
K = Annotated[int | None, Query(ge=1, le=100, description="List length (default: placement's).")]
PlacementName = Annotated[
    str | None, Query(max_length=64, description="Rules to apply (nextbuy.toml [placements]).")
]
Session = Annotated[str | None, Query(min_length=1, max_length=256)]
Category = Annotated[
    str | None, Query(max_length=256, description="Category of the page shown (cold start).")
]
# Query parameters with a meaning of their own; any other becomes request context.
NAMED = frozenset({"k", "placement", "session_id", "category", "user_id"})


def _state(request: Request) -> ServingState:
    return request.app.state.serving


def _context(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.items() if k not in NAMED}


@router.get("/users/{user_id}/recommendations", response_model=Recommendations)
async def for_user(
    request: Request,
    user_id: UserId,
    k: K = None,
    placement: PlacementName = None,
    session_id: Session = None,
    category: Category = None,
) -> JSONResponse:
    """Recommended for you. Unknown users get cold-start lists (never a 404): the page's
    category best sellers, their onboarding answers, trending. Any other query parameter
    (device=mobile, ...) is passed to the rules as request context."""
    state = _state(request)
    ask = Ask(user_id, session_id, k, placement, category, _context(request))
    return JSONResponse(recommend.for_user(state, state.current(), ask))


@router.get("/sessions/{session_id}/recommendations", response_model=Recommendations)
async def for_session(
    request: Request,
    session_id: UserId,
    k: K = None,
    placement: PlacementName = None,
    category: Category = None,
) -> JSONResponse:
    """Recommendations for an anonymous visitor, from their session's events only."""
    state = _state(request)
    ask = Ask(None, session_id, k, placement, category, _context(request))
    return JSONResponse(recommend.for_user(state, state.current(), ask))


@router.get("/items/{item_id}/similar", response_model=Recommendations)
async def similar(
    request: Request,
    item_id: ItemId,
    k: K = None,
    placement: PlacementName = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    session_id: Session = None,
) -> JSONResponse:
    """Items like this one (404 for an unknown item)."""
    state = _state(request)
    ask = Ask(user_id, session_id, k, placement, None, _context(request))
    return JSONResponse(recommend.similar(state, state.current(), item_id, ask))


@router.get("/items/{item_id}/bought-together", response_model=Recommendations)
async def bought_together(
    request: Request,
    item_id: ItemId,
    k: K = None,
    placement: PlacementName = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
    session_id: Session = None,
) -> JSONResponse:
    """Frequently bought together with this item (basket pairs; 404 for an unknown item)."""
    state = _state(request)
    ask = Ask(user_id, session_id, k, placement, None, _context(request))
    return JSONResponse(recommend.bought_together(state, state.current(), item_id, ask))


@router.post("/recommendations/cart", response_model=Recommendations)
async def cart(request: Request, body: CartRequest) -> JSONResponse:
    """Cross-sell for a cart: what is bought with its items, then the shopper's own picks."""
    state = _state(request)
    ask = Ask(body.user_id, body.session_id, body.k, body.placement)
    return JSONResponse(recommend.cart(state, state.current(), body.items, ask))


@router.post("/rerank", response_model=Recommendations)
async def rerank(request: Request, body: RerankRequest) -> JSONResponse:
    """Your list, re-ordered for this shopper by the model's scores for exactly those items;
    items the model cannot score keep their order at the end (all of them, for a shopper
    without history)."""
    state = _state(request)
    ask = Ask(body.user_id, body.session_id)
    return JSONResponse(recommend.rerank(state, state.current(), body.items, ask))


@router.get("/trending", response_model=Recommendations)
async def trending(
    request: Request, k: K = None, category: Category = None, placement: PlacementName = None
) -> JSONResponse:
    """What is trending (decayed recent interest), overall or in a category; new arrivals
    get a slot."""
    state = _state(request)
    ask = Ask(None, None, k, placement, category, _context(request))
    return JSONResponse(recommend.trending(state, state.current(), ask))


@router.get("/users/{user_id}/buy-again", response_model=Recommendations)
async def buy_again(
    request: Request, user_id: UserId, k: K = None, placement: PlacementName = None
) -> JSONResponse:
    """Items the user bought before, by frequency and recency; available items only."""
    state = _state(request)
    ask = Ask(user_id, None, k, placement, None, _context(request))
    return JSONResponse(recommend.buy_again(state, state.current(), ask))
