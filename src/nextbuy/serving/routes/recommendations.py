"""Recommendation routes (scope: read).

The GET routes read their parameters by hand (see nextbuy.serving.params): they are the
hot path, and FastAPI's per-parameter validation would cost more than the recommendation.
Every list goes through `experimentation.serve`: experiment arms, then the exposure log.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from nextbuy.serving import recommend
from nextbuy.serving.experimentation import Compute, serve
from nextbuy.serving.params import Param, documented, parse
from nextbuy.serving.recommend import Ask
from nextbuy.serving.responses import JSONResponse
from nextbuy.serving.schemas import CartRequest, Recommendations, RerankRequest
from nextbuy.serving.state import ServingState

router = APIRouter(prefix="/v1", tags=["recommendations"])

USER = Param("user_id", "path", description="The shop's customer id (unknown ids are fine).")
ITEM = Param("item_id", "path", description="A product id.")
SESSION_PATH = Param("session_id", "path", description="An anonymous visitor's session id.")
K = Param("k", kind=int, ge=1, le=100, description="List length (default: the placement's).")
PLACEMENT = Param("placement", max_length=64, description="Rules to apply ([placements]).")
SESSION = Param("session_id", description="The visitor's session: its events count too.")
CATEGORY = Param("category", description="Category of the page shown (best sellers).")
USER_QUERY = Param("user_id", description="Who is looking (for rules that know them).")
# Query parameters with a meaning of their own; any other becomes request context.
NAMED = frozenset({"k", "placement", "session_id", "category", "user_id"})

FOR_USER = (USER, K, PLACEMENT, SESSION, CATEGORY)
FOR_SESSION = (SESSION_PATH, K, PLACEMENT, CATEGORY)
FOR_ITEM = (ITEM, K, PLACEMENT, USER_QUERY, SESSION)
TRENDING = (K, CATEGORY, PLACEMENT)
BUY_AGAIN = (USER, K, PLACEMENT)


def _state(request: Request) -> ServingState:
    return request.app.state.serving


def _for_user(state: ServingState) -> Compute:
    return lambda live, ask: recommend.for_user(state, live, ask)


def _context(request: Request) -> dict[str, str]:
    query = request.query_params
    if len(query) == sum(1 for name in NAMED if name in query):
        return {}
    return {k: v for k, v in query.items() if k not in NAMED}


def _ask(request: Request, params: tuple[Param, ...]) -> tuple[Ask, dict]:
    values = parse(request, params)
    ask = Ask(
        user_id=values.get("user_id"),
        session_id=values.get("session_id"),
        k=values.get("k"),
        placement=values.get("placement"),
        category=values.get("category"),
        context=_context(request),
    )
    return ask, values


@router.get(
    "/users/{user_id}/recommendations",
    response_model=Recommendations,
    openapi_extra=documented(FOR_USER),
)
async def for_user(request: Request) -> JSONResponse:
    """Recommended for you. Unknown users get cold-start lists (never a 404): the page's
    category best sellers, their onboarding answers, trending. Any other query parameter
    (device=mobile, ...) is passed to the rules as request context."""
    state = _state(request)
    ask, _ = _ask(request, FOR_USER)
    return JSONResponse(serve(state, "for_user", ask, _for_user(state)))


@router.get(
    "/sessions/{session_id}/recommendations",
    response_model=Recommendations,
    openapi_extra=documented(FOR_SESSION),
)
async def for_session(request: Request) -> JSONResponse:
    """Recommendations for an anonymous visitor, from their session's events only."""
    state = _state(request)
    ask, _ = _ask(request, FOR_SESSION)
    return JSONResponse(serve(state, "for_session", ask, _for_user(state)))


@router.get(
    "/items/{item_id}/similar", response_model=Recommendations, openapi_extra=documented(FOR_ITEM)
)
async def similar(request: Request) -> JSONResponse:
    """Items like this one (404 for an unknown item)."""
    state = _state(request)
    ask, values = _ask(request, FOR_ITEM)
    item = values["item_id"]
    return JSONResponse(
        serve(state, "similar", ask, lambda live, a: recommend.similar(state, live, item, a))
    )


@router.get(
    "/items/{item_id}/bought-together",
    response_model=Recommendations,
    openapi_extra=documented(FOR_ITEM),
)
async def bought_together(request: Request) -> JSONResponse:
    """Frequently bought together with this item (basket pairs; 404 for an unknown item)."""
    state = _state(request)
    ask, values = _ask(request, FOR_ITEM)
    item = values["item_id"]
    return JSONResponse(
        serve(
            state,
            "bought_together",
            ask,
            lambda live, a: recommend.bought_together(state, live, item, a),
        )
    )


@router.post("/recommendations/cart", response_model=Recommendations)
async def cart(request: Request, body: CartRequest) -> JSONResponse:
    """Cross-sell for a cart: what is bought with its items, then the shopper's own picks."""
    state = _state(request)
    ask = Ask(body.user_id, body.session_id, body.k, body.placement)
    items = body.items
    return JSONResponse(
        serve(state, "cart", ask, lambda live, a: recommend.cart(state, live, items, a))
    )


@router.post("/rerank", response_model=Recommendations)
async def rerank(request: Request, body: RerankRequest) -> JSONResponse:
    """Your list, re-ordered for this shopper by the model's scores for exactly those items;
    items the model cannot score keep their order at the end (all of them, for a shopper
    without history)."""
    state = _state(request)
    ask = Ask(body.user_id, body.session_id)
    items = body.items
    return JSONResponse(
        serve(state, "rerank", ask, lambda live, a: recommend.rerank(state, live, items, a))
    )


@router.get("/trending", response_model=Recommendations, openapi_extra=documented(TRENDING))
async def trending(request: Request) -> JSONResponse:
    """What is trending (decayed recent interest), overall or in a category; new arrivals
    get a slot."""
    state = _state(request)
    ask, _ = _ask(request, TRENDING)
    return JSONResponse(
        serve(state, "trending", ask, lambda live, a: recommend.trending(state, live, a))
    )


@router.get(
    "/users/{user_id}/buy-again",
    response_model=Recommendations,
    openapi_extra=documented(BUY_AGAIN),
)
async def buy_again(request: Request) -> JSONResponse:
    """Items the user bought before, by frequency and recency; available items only."""
    state = _state(request)
    ask, _ = _ask(request, BUY_AGAIN)
    return JSONResponse(
        serve(state, "buy_again", ask, lambda live, a: recommend.buy_again(state, live, a))
    )
