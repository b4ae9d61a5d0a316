"""A shop whose customers buy by device: the planted truth behind the request-context tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

CHEAP_ITEMS = 60  # i0..i59 cost 2.0 and are bought on phones; i60..i119 at desks


def device_shop(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers buy cheap items on their phones and dear ones at their desks (planted):
    every visit is on one device, named in the events' context as a shop's export holds it."""
    rng = np.random.default_rng(seed)
    n_items, half = 120, 60
    items = pd.DataFrame(
        {
            "item_id": [f"i{t}" for t in range(n_items)],
            "price": np.where(np.arange(n_items) < half, 2.0, 80.0),
            "category": np.where(np.arange(n_items) < half, "Small", "Large"),
        }
    )
    popularity = rng.dirichlet(np.full(half, 0.7))
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for user in range(500):
        for visit in np.sort(rng.uniform(0, 120, 10)):
            device = "mobile" if rng.random() < 0.5 else "desktop"
            offset = 0 if device == "mobile" else half
            when = start + pd.Timedelta(days=float(visit))
            for item in rng.choice(half, 2, replace=False, p=popularity) + offset:
                rows.append((f"u{user}", f"i{item}", "purchase", when, f'{{"device": "{device}"}}'))
    events = pd.DataFrame(
        rows, columns=["user_id", "item_id", "event_type", "timestamp", "context"]
    )
    return events, items
