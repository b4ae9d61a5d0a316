"""Reasons for a list the pipeline ranked on the request: which ranker feature lifted each
item (occlusion against the request's mean), told with the item's facts and the shopper's
latest item most like it."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from nextbuy.hybrid.explain import ItemFacts
from nextbuy.models.base import entries
from nextbuy.rules.catalog import ItemCatalog


def occlusion_contributions(
    booster: Any,
    x: np.ndarray,
    baseline: np.ndarray,
    best_iteration: int | None,
    split: np.ndarray | None = None,
) -> np.ndarray:
    """(rows, features): how much the ranker's score drops when one feature takes its
    baseline value (the mean over this request's candidates). LightGBM's exact TreeSHAP
    costs ~6 ms for ten rows, these rows × features copies one prediction (~1 ms). The
    signal named differs from TreeSHAP's on about a third of items (measured on the
    sample); trained users' precomputed lists keep TreeSHAP reasons. A feature already at
    its baseline in every row (the shopper's own numbers, the request's context) is not
    copied, nor one no tree splits on (`split`: per feature, whether any tree up to
    `best_iteration` does): their contribution is exactly 0."""
    n, width = x.shape
    # rtol: the mean of equal values may round in the last bit
    with np.errstate(invalid="ignore"):  # np.isclose's own checks cost more than ten rows do
        close = np.abs(x - baseline) <= 1e-9 * np.abs(baseline)
    same = (close | (x == baseline) | (np.isnan(x) & np.isnan(baseline))).all(axis=0)
    varies = np.flatnonzero(~same if split is None else ~same & split)
    copies = np.repeat(x[:, None, :], len(varies), axis=1)
    copies[:, np.arange(len(varies)), varies] = baseline[varies][None, :]
    both = np.concatenate([x, copies.reshape(n * len(varies), width)])
    scores = np.asarray(booster.predict(both, num_iteration=best_iteration, num_threads=1))
    out = np.zeros((n, width))
    out[:, varies] = scores[:n, None] - scores[n:].reshape(n, len(varies))
    return out


def item_facts(
    catalog: ItemCatalog,
    items: list[int],
    x: np.ndarray,
    names: list[str],
    anchors: list[str | None],
) -> list[ItemFacts]:
    """What a reason may name of each item: its title, category, brand, the shopper's item
    it resembles and how often they bought it."""
    times = x[:, names.index("ui_baskets")] if "ui_baskets" in names else np.zeros(len(items))
    out = []
    for item, anchor, count in zip(items, anchors, times.tolist(), strict=True):
        category = catalog.category[item] or catalog.top_category[item] or ""
        out.append(
            ItemFacts(
                str(catalog.title[item] or catalog.item_ids[item]),
                str(category),
                str(catalog.brand[item] or ""),
                anchor,
                float(count),
            )
        )
    return out


def cells(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows][:, cols] as a dense array, without scipy's fancy indexing (which costs
    ~0.2 ms a call on a request's handful of rows); `cols` distinct."""
    out = np.zeros((len(rows), len(cols)))
    row, col, value = entries(matrix, rows)
    order = np.argsort(cols)
    sorted_cols = cols[order]
    at = np.minimum(np.searchsorted(sorted_cols, col), len(cols) - 1)
    hit = sorted_cols[at] == col
    out[row[hit], order[at[hit]]] = value[hit]
    return out


def row_products(matrix: sp.csr_matrix, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(matrix[rows] @ matrix[others].T) as a dense array, for a handful of rows; only the
    columns `others` use are laid out (a dense row of the whole vocabulary per anchor costs
    more than the products)."""
    row, col, value = entries(matrix, others)
    used = np.unique(col)
    dense = np.zeros((len(others), len(used)))
    np.add.at(dense, (row, np.searchsorted(used, col)), value)
    row, col, value = entries(matrix, rows)
    out = np.zeros((len(rows), len(others)))
    if not len(used):
        return out
    at = np.minimum(np.searchsorted(used, col), len(used) - 1)
    shared = used[at] == col
    row, at, value = row[shared], at[shared], value[shared]
    for j in range(len(others)):
        out[:, j] = np.bincount(row, weights=value * dense[j, at], minlength=len(rows))
    return out


def plain(text: str) -> str:
    """The pipeline says "Because you bought X"; the API's reasons start in lower case."""
    return text[:1].lower() + text[1:] if text else text
