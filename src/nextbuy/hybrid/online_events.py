"""What the online ranker works on: a shopper's events as arrays, events since training,
new catalogue items, candidate facts kept between an event and the next request, and a
request's scored candidates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from nextbuy.hybrid.candidates import CandidateRequest, CandidateSet


@dataclass(frozen=True)
class FreshEvent:
    """Something a shopper did since the cutoff, as a request sees it."""

    item_id: str
    event_type: str
    ts_ns: int  # UTC nanoseconds


@dataclass(frozen=True)
class NewItems:
    """Catalogue items added since training, as candidates: content rows (in the content
    generator's space) and what the item features need."""

    vectors: sp.csr_matrix
    price: np.ndarray  # float64, NaN unknown
    category: np.ndarray  # object: category path, "" none
    brand: np.ndarray  # object: brand, "" none

    def __len__(self) -> int:
        return len(self.price)

    def take(self, rows: np.ndarray) -> NewItems:
        return NewItems(self.vectors[rows], self.price[rows], self.category[rows], self.brand[rows])


@dataclass
class Attributes:
    table: np.ndarray  # (n, ITEM_FEATURES)
    price: np.ndarray
    category: np.ndarray  # group codes, -1 none
    brand: np.ndarray


@dataclass
class OnlineScored:
    """One request's candidates (stage item indices), ranker scores and ordering scores."""

    candidates: CandidateSet
    features: np.ndarray  # (n, n_features) in the ranker's column order
    raw: np.ndarray
    order: np.ndarray  # what the list is sorted by (exposure penalty, cold-start fallback)
    request: CandidateRequest
    generated_before: bool = False  # candidates came from `OnlineRanker.prepare`


@dataclass(frozen=True)
class EventFacts:
    """What the features read of one shopper's events for one candidate set, event times
    kept as stamps (the request's clock turns them into ages)."""

    user: dict[str, float]  # USER_FEATURES, the two ages NaN
    first: int | None  # stamp of the oldest event (None: no events)
    last: int | None  # stamp of the newest event
    touched: np.ndarray  # candidate rows the shopper has events of
    baskets: np.ndarray  # their distinct baskets
    newest: np.ndarray  # stamp of their newest and oldest event
    oldest: np.ndarray
    in_category: np.ndarray  # candidate rows whose category the shopper has events in
    category_share: np.ndarray  # the share of their events in it
    category_newest: np.ndarray  # stamp of the newest such event
    in_brand: np.ndarray  # the same for brands
    brand_share: np.ndarray


class Generated(NamedTuple):
    """What is kept of a shopper between their event and their request."""

    requests: dict[object, CandidateRequest]  # the history rows, per matrix
    candidates: CandidateSet
    facts: EventFacts


class UserEvents:
    """One user's events (before the request time) as arrays."""

    def __init__(
        self,
        item: np.ndarray,
        stamp: np.ndarray,
        basket: np.ndarray,
        quantity: np.ndarray,
        purchase: np.ndarray,
        weight: np.ndarray,
        fresh: np.ndarray,
        key: np.ndarray,
    ) -> None:
        self.item = item  # stage item index, -1 unknown
        self.stamp = stamp  # int64 ns
        self.basket = basket  # int64 code
        self.quantity = quantity
        self.purchase = purchase
        self.weight = weight
        self.fresh = fresh  # bool: since the cutoff
        self.key = key  # int64: distinct per item id (unknown items too)

    def __len__(self) -> int:
        return len(self.item)
