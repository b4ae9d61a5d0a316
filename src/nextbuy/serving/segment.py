"""A run of candidates from one source (a precomputed list, partners of a recent item, a
category's best sellers), with where each came from: what candidate generation hands to
merging and what the reasons are written from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    items: np.ndarray  # catalogue indices, best first
    scores: np.ndarray
    origin: str
    anchors: dict[int, int] = field(default_factory=dict)  # item -> the item it came from
    label: str | None = None  # e.g. the category a list was drawn from
    item_labels: dict[int, str] = field(default_factory=dict)  # per item, where it varies

    def __len__(self) -> int:
        return len(self.items)
