"""User profiles the request path needs (consent, onboarding answers), held in memory."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Onboarding:
    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None

    @classmethod
    def parse(cls, value: Any) -> Onboarding | None:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        if not isinstance(value, dict):
            return None
        return cls(
            tuple(str(c) for c in value.get("categories") or ()),
            tuple(str(b) for b in value.get("brands") or ()),
            _number(value.get("price_min")),
            _number(value.get("price_max")),
        )

    @property
    def empty(self) -> bool:
        return not (self.categories or self.brands) and self.price_min is self.price_max is None


@dataclass(frozen=True)
class Profile:
    consent: bool = True
    onboarding: Onboarding | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def matters(self) -> bool:
        """Whether it changes any answer (only those are kept in memory)."""
        return not self.consent or (self.onboarding is not None and not self.onboarding.empty)


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


class Profiles:
    """user id -> Profile; users without a profile consent and have no onboarding."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[str, Profile] = {}

    @classmethod
    def from_frame(cls, users: pd.DataFrame) -> Profiles:
        book = cls()
        for row in users.itertuples(index=False):
            profile = _profile(row._asdict())
            if profile.matters:
                book._by_user[str(row.user_id)] = profile
        return book

    def get(self, user_id: str | None) -> Profile | None:
        return None if user_id is None else self._by_user.get(user_id)

    def put(self, user_id: str, row: dict[str, Any]) -> Profile:
        profile = _profile(row)
        with self._lock:
            if profile.matters:
                self._by_user[user_id] = profile
            else:
                self._by_user.pop(user_id, None)
        return profile

    def forget(self, user_id: str) -> bool:
        with self._lock:
            return self._by_user.pop(user_id, None) is not None


def _profile(row: dict[str, Any]) -> Profile:
    consent = row.get("consent")
    attributes = row.get("attributes")
    if isinstance(attributes, str):
        attributes = json.loads(attributes) if attributes.strip() else {}
    return Profile(
        consent=True if consent is None or pd.isna(consent) else bool(consent),
        onboarding=Onboarding.parse(row.get("onboarding")),
        attributes=attributes if isinstance(attributes, dict) else {},
    )
