"""Request and response bodies of the API, as they appear in the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nextbuy.data.schema import Onboarding

ID = Field(min_length=1, max_length=256)


class RecommendedItem(BaseModel):
    item_id: str
    score: float | None = Field(
        description=(
            "Relevance in [0, 1], comparable within this list only: the first item's is at "
            "most 1 and none is above the one before it (an item a rule lifted or placed "
            "takes the score of its place). Re-ranked items: the model's scores scaled so "
            "the best is 1 and the least 0; null where the model cannot score an item."
        )
    )
    title: str | None
    reason: str | None = Field(description='e.g. "because you bought X", "trending".')
    position: int = Field(description="1-based.")


class Recommendations(BaseModel):
    recommendation_id: str = Field(description="Send it back with the events it leads to.")
    model_version: str
    placement: str
    user_id: str | None
    items: list[RecommendedItem]
    experiment: str | None = Field(
        default=None, description="The experiment this list was served under, if any."
    )
    variant: str | None = Field(default=None, description="Its variant (arm).")
    assignments: dict[str, str] | None = Field(
        default=None, description="Experiment -> variant, when several layers assigned one."
    )
    shuffled: bool | None = Field(
        default=None, description="True when the arm serves its list in random order."
    )


class CartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    items: list[str] = Field(min_length=1, max_length=500, description="Item ids in the cart.")
    k: int | None = Field(default=None, ge=1, le=100)
    placement: str | None = None


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=256)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    items: list[str] = Field(min_length=1, max_length=1000, description="The list to re-rank.")


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events in the request, all valid.")
    stored: int = Field(description="Events new to the store.")
    duplicates: int = Field(description="Re-sent events (same event_id), stored before.")


class ItemIn(BaseModel):
    """A product; item_id comes from the path. Fields left out keep their stored value."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str | None = None
    category: str | None = Field(default=None, description='A path such as "Shoes > Running".')
    brand: str | None = None
    price: float | None = Field(default=None, ge=0)
    margin: float | None = None
    available: bool | None = None
    stock: float | None = None
    created_at: datetime | None = Field(default=None, description="Default: now, if new.")
    tags: list[str] | None = None
    attributes: dict[str, Any] | None = None


class UserIn(BaseModel):
    """A user's profile; user_id comes from the path."""

    model_config = ConfigDict(extra="forbid")

    attributes: dict[str, Any] = Field(default_factory=dict)
    consent: bool = Field(default=True, description="False: only non-personalised results.")
    onboarding: Onboarding | None = None
    created_at: datetime | None = None


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1)


class Stored(BaseModel):
    item_id: str | None = None
    user_id: str | None = None
    stored: bool = True
