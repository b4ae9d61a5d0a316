"""Helpers for `Recommender.request_top`: one request's top n without a dense catalogue row.

For a batch of users a dense row per user and `top_k` is right; for one request on a
100,000-item catalogue each dense row and its partition cost about a millisecond. Most
models give a finite score to few items (item kNN, EASE on its kept items, buy-again), or
give the rest a score that does not depend on the shopper (the category model's popularity
term, trending), so their top n is found among the items the shopper touches plus a prefix
of an order computed once. Each family's `request_top` returns what `top_k` of its dense
scores returns after the exclusions: the same scores to the bit and the same items, except
among items tied with the last score kept (tests/test_request_tops.py compares them).
"""

from __future__ import annotations

import numpy as np

from nextbuy.models.base import TopK


def best(items: np.ndarray, scores: np.ndarray, n: int) -> TopK:
    """The n highest finite scores among `items`, best first, ties to the lower index, as a
    1 × n `TopK` padded with -1 / -inf (what `top_k` gives for one row)."""
    finite = np.isfinite(scores)
    items, scores = items[finite], scores[finite]
    if len(items) > n:
        # everything tied with the n-th best stays, so the index tie-break below is exact
        nth = np.partition(scores, len(scores) - n)[len(scores) - n]
        keep = scores >= nth
        items, scores = items[keep], scores[keep]
    order = np.lexsort((items, -scores))[:n]
    out_items = np.full((1, n), -1, np.int64)
    out_scores = np.full((1, n), -np.inf, np.float32)
    out_items[0, : len(order)] = items[order]
    out_scores[0, : len(order)] = scores[order]
    return TopK(out_items, out_scores)


def nothing(n: int) -> TopK:
    return best(np.zeros(0, np.int64), np.zeros(0, np.float32), n)


def dense_best(scores: np.ndarray, n: int) -> TopK:
    """`best` of a dense row of every item: the n-th value first, then only what reaches it."""
    if len(scores) > n:
        nth = np.partition(scores, len(scores) - n)[len(scores) - n]
        if np.isfinite(nth):
            reach = np.flatnonzero(scores >= nth)
            return best(reach, scores[reach], n)
    return best(np.arange(len(scores)), scores, n)


def order_of(scores: np.ndarray) -> np.ndarray:
    """Items with a finite score, best first, ties to the lower index."""
    finite = np.flatnonzero(np.isfinite(scores))
    return finite[np.lexsort((finite, -scores[finite]))]


def unblocked(items: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    return items[~blocked[items]] if len(items) else items


def union(n_items: int, *parts: np.ndarray) -> np.ndarray:
    """Sorted distinct items of `parts` (a mask over the catalogue beats sorting here)."""
    mask = np.zeros(n_items, bool)
    for part in parts:
        mask[part] = True
    return np.flatnonzero(mask)
