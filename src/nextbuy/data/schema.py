"""The data model: interaction, item and user records and the event-type vocabulary.

Column tuples here are the single source of truth for the store's tables, the importer's
validation and the API's request bodies.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    WISHLIST = "wishlist"
    PURCHASE = "purchase"
    RATING = "rating"


STANDARD_EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)

# Default strength of each signal in the training matrix; a purchase says far more than a view.
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "add_to_cart": 3.0,
    "remove_from_cart": 0.0,
    "wishlist": 2.0,
    "purchase": 5.0,
    "rating": 1.0,
}

# Interaction columns in storage order. Ids are strings; time is UTC milliseconds.
INTERACTION_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "event_type",
    "timestamp",
    "value",
    "quantity",
    "session_id",
    "order_id",
    "recommendation_id",
    "context",
    "event_id",
)
INTERACTION_REQUIRED: tuple[str, ...] = ("item_id", "event_type", "timestamp")
INTERACTION_STRING_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "event_type",
    "session_id",
    "order_id",
    "recommendation_id",
    "event_id",
)
INTERACTION_NUMBER_COLUMNS: tuple[str, ...] = ("value", "quantity")

ITEM_COLUMNS: tuple[str, ...] = (
    "item_id",
    "title",
    "description",
    "category",
    "brand",
    "price",
    "margin",
    "available",
    "stock",
    "created_at",
    "tags",
    "attributes",
)
ITEM_NUMBER_COLUMNS: tuple[str, ...] = ("price", "margin", "stock")

USER_COLUMNS: tuple[str, ...] = ("user_id", "attributes", "consent", "onboarding", "created_at")

CATEGORY_SEPARATOR = ">"


class Interaction(BaseModel):
    """One event; either user_id or session_id names who did it."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)
    event_type: str = Field(min_length=1, max_length=64)
    timestamp: datetime | None = None
    value: float | None = None
    quantity: float | None = Field(default=None, ge=0)
    session_id: str | None = Field(default=None, max_length=256)
    order_id: str | None = Field(default=None, max_length=256)
    recommendation_id: str | None = Field(default=None, max_length=256)
    context: dict[str, Any] | None = None
    event_id: str | None = Field(default=None, max_length=256)


class Onboarding(BaseModel):
    """What a new customer told the shop about their taste."""

    model_config = ConfigDict(extra="forbid")

    categories: list[str] = Field(default_factory=list)
    brands: list[str] = Field(default_factory=list)
    price_min: float | None = Field(default=None, ge=0)
    price_max: float | None = Field(default=None, ge=0)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=256)
    title: str | None = None
    description: str | None = None
    category: str | None = Field(default=None, description='A path such as "Shoes > Running".')
    brand: str | None = None
    price: float | None = Field(default=None, ge=0)
    margin: float | None = None
    available: bool = True
    stock: float | None = None
    created_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)


class User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict)
    consent: bool = Field(default=True, description="False: only non-personalised results.")
    onboarding: Onboarding | None = None
    created_at: datetime | None = None


def category_levels(path: str | None) -> list[str]:
    """'Shoes > Running' -> ['Shoes', 'Shoes > Running']: every ancestor, for per-level rules."""
    if not path:
        return []
    parts = [p.strip() for p in path.split(CATEGORY_SEPARATOR) if p.strip()]
    return [f" {CATEGORY_SEPARATOR} ".join(parts[: i + 1]) for i in range(len(parts))]
