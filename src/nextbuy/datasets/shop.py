"""ShopData: the three frames a dataset loader returns, ready for import."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class ShopData:
    """Interactions, items and users in nextbuy column names (None where a dataset has none).

    `custom_event_types` maps every event type outside the standard vocabulary that the
    interactions use to the training weight it should get; pass it to the events config.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    custom_event_types: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Row and distinct-id counts, for reports and sanity checks."""
        inter = self.interactions
        return {
            "interactions": len(inter),
            "users": int(inter["user_id"].nunique()),
            "items_in_interactions": int(inter["item_id"].nunique()),
            "items": 0 if self.items is None else len(self.items),
        }
