"""Serving the hybrid pipeline: its lists, its ranking per request, its reasons, new items.

- Trained users with nothing new since training: the list `nextbuy train` precomputed with
  the pipeline (`HybridModel.prepare_to_serve`), the head of it with the pipeline's reasons.
- Shoppers with events since training, and anonymous sessions: the pipeline runs on the
  request (`hybrid.online.OnlineRanker`): its generators' candidates from the trained history
  plus the new events, features from arrays built at load, LightGBM on those rows.
- Items added through the API since training: their content is encoded with the pipeline's
  vocabularies as soon as the catalogue changes (`new_items`); they join the similar-items
  lists of the items they resemble and, as candidates of the content generator, the personal
  pool of shoppers who just looked at such items.

Model item indices are the pipeline's stage indices and the catalogue's first indices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.content import infer_category
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.hybrid.explain import ItemFacts, reasons
from nextbuy.hybrid.features import RequestContext
from nextbuy.hybrid.model import CONTENT_SIMILARITY_WEIGHT, HybridModel
from nextbuy.hybrid.online import FreshEvent, NewItems, OnlineScored
from nextbuy.models import Recommender
from nextbuy.models.base import best_of, entries
from nextbuy.models.content_model import ContentModel
from nextbuy.rules.base import positions_in
from nextbuy.serving.online import shopper_key
from nextbuy.serving.segment import Segment

if TYPE_CHECKING:
    from nextbuy.serving.live import Live
    from nextbuy.serving.metrics import Metrics
    from nextbuy.serving.shopper import Shopper

NEW_MIN_COSINE = 0.3  # content cosine from which a new item counts as like another
NEW_ANCHORS = 5  # the shopper's latest items whose new look-alikes join the pool
NEW_PER_REQUEST = 50  # new items ranked per request at most
NS_PER_MS = 1_000_000
# A new item has no co-purchases yet: its content cosine stands in for the (0..1) kNN
# similarity it will earn, on top of the content share every item gets.
NEW_ITEM_SIMILARITY = 1.0 + CONTENT_SIMILARITY_WEIGHT


def hybrid_of(model: Recommender) -> HybridModel | None:
    return model if isinstance(model, HybridModel) else None


# -- lists precomputed at training --------------------------------------------------------------
def serving_lists(
    model: Recommender, data: InteractionMatrix, n: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The hybrid's top-n of every trained user (None for other models)."""
    hybrid = hybrid_of(model)
    if hybrid is None:
        return None
    users = list(data.user_ids)
    found = hybrid.precomputed_lists(users, n)
    if found is None:  # trained from Python without lists: make them now, once per load
        hybrid.prepare_to_serve(users, n)
        found = hybrid.precomputed_lists(users, n)
    return found


# -- a shopper with events since training --------------------------------------------------------
@dataclass
class Ranked:
    """What the request ranked: kept on the shopper so the reasons can reuse it."""

    scored: OnlineScored
    catalog_items: np.ndarray  # catalogue index of each candidate row


def personal_segment(
    live: Live,
    shopper: Shopper,
    n: int,
    exclude_seen: bool,
    metrics: Metrics | None = None,
    context: RequestContext | None = None,
) -> Segment | None:
    """The pipeline's best n for this shopper, ranked on this request in its context."""
    hybrid = hybrid_of(live.model.model)
    assert hybrid is not None
    online = hybrid.online
    user, fresh = pipeline_inputs(shopper)
    new_index, new = _new_candidates(live, shopper)
    who = shopper_key(shopper.user_id, shopper.session_id)
    scored = online.score(user, fresh, time.time_ns(), context, new=new, cache_as=who)
    if metrics is not None:
        outcome = "ranked_ahead" if scored.generated_before else "generated_inline"
        metrics.candidate_sets.labels(outcome).inc()
    items = scored.candidates.items
    catalog_items = items.copy()
    beyond = items >= online.n_items
    catalog_items[beyond] = new_index[items[beyond] - online.n_items]
    order = scored.order.copy()
    if exclude_seen and len(shopper.cols):
        order[np.isin(catalog_items, shopper.cols)] = -np.inf
    best, values = best_of(order, n)
    shopper.ranked = Ranked(scored, catalog_items)
    return Segment(catalog_items[best], values, "personal")


def pipeline_inputs(shopper: Shopper) -> tuple[str | None, list[FreshEvent]]:
    """The user whose trained events the pipeline reads, and what they did since."""
    fresh = [FreshEvent(e.item_id, e.event_type, e.ts_ms * NS_PER_MS) for e in shopper.recent]
    # an erased or unknown user has no trained events to read
    return (shopper.user_id if shopper.trained else None), fresh


def _new_candidates(live: Live, shopper: Shopper) -> tuple[np.ndarray, NewItems | None]:
    """New items whose content is like one of the shopper's latest items."""
    found = live.new_items
    hybrid = hybrid_of(live.model.model)
    if found is None or hybrid is None or not shopper.recent:
        return np.zeros(0, np.int64), None
    vectors = hybrid.content_vectors()
    if vectors is None:
        return np.zeros(0, np.int64), None
    anchors = _latest_model_items(live, shopper, vectors.shape[0])
    if not len(anchors):
        return np.zeros(0, np.int64), None
    cosine = np.asarray((found.items.vectors @ vectors[anchors].T).todense()).max(axis=1)
    close = np.flatnonzero(cosine >= NEW_MIN_COSINE)
    close = close[np.argsort(-cosine[close], kind="stable")][:NEW_PER_REQUEST]
    if not len(close):
        return np.zeros(0, np.int64), None
    return found.index[close], found.items.take(close)


def _latest_model_items(live: Live, shopper: Shopper, n_stage: int) -> np.ndarray:
    index = live.catalog.index
    out: list[int] = []
    for event in reversed(shopper.recent):
        at = index.get(event.item_id)
        if at is not None and at < n_stage and at not in out:
            out.append(at)
            if len(out) == NEW_ANCHORS:
                break
    return np.asarray(out, np.int64)


# -- reasons ---------------------------------------------------------------------------------------
def personal_reasons(live: Live, shopper: Shopper, items: list[int]) -> dict[int, str]:
    """Catalogue index → the pipeline's reason, in plain words, for these listed items."""
    hybrid = hybrid_of(live.model.model)
    if hybrid is None:
        return {}
    ranked: Ranked | None = getattr(shopper, "ranked", None)
    if ranked is None:
        if shopper.trained and shopper.user_id is not None and not shopper.recent:
            found = hybrid.reasons_of(shopper.user_id)
            return {i: _plain(found[i]) for i in items if i in found}
        return {}
    listed = np.asarray(items, np.int64)
    at = positions_in(ranked.catalog_items, listed)
    known = at >= 0
    if not known.any():
        return {}
    explained, positions = listed[known].tolist(), at[known]
    online = hybrid.online
    x = ranked.scored.features[positions]
    contributions = occlusion_contributions(
        online.booster,
        x,
        ranked.scored.features.mean(axis=0),
        online.best_iteration,
        online.split_features,
    )
    cands = ranked.scored.candidates
    origins = [cands.generators[g] for g in np.argmin(cands.ranks[positions], axis=1)]
    facts = _facts(live, shopper, explained, x, online.feature_order)
    found = reasons(contributions, online.feature_order, facts, origins)
    return {i: _plain(r.text) for i, r in zip(explained, found, strict=True)}


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


def _facts(
    live: Live, shopper: Shopper, items: list[int], x: np.ndarray, names: list[str]
) -> list[ItemFacts]:
    catalog = live.catalog
    times = x[:, names.index("ui_baskets")] if "ui_baskets" in names else np.zeros(len(items))
    anchors = _anchor_titles(live, shopper, items)
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


def _anchor_titles(live: Live, shopper: Shopper, items: list[int]) -> list[str | None]:
    """Per item, the title of the shopper's latest item most like it (kNN, else content)."""
    hybrid = hybrid_of(live.model.model)
    assert hybrid is not None
    n_stage = hybrid.online.n_items
    mine = _latest_model_items(live, shopper, n_stage)
    if not len(mine):
        mine = shopper.history[shopper.history < n_stage][:NEW_ANCHORS]
    if not len(mine):
        return [None] * len(items)
    targets = np.asarray(items, np.int64)
    inside = targets < n_stage
    sims = np.zeros((len(targets), len(mine)))
    vectors = hybrid.content_vectors()
    if vectors is not None:
        # content for new items (kNN knows nothing of them); kNN first for the rest
        sims[inside] = 1e-3 * row_products(vectors, targets[inside], mine)
    stage = hybrid.hybrid.stage if hybrid.hybrid is not None else None
    knn = next((g.model for g in getattr(stage, "generators", []) if g.name == "recent"), None)
    similarity = getattr(knn, "similarity", None)
    if similarity is not None and inside.any():
        sims[inside] += cells(similarity, targets[inside], mine)
    new = live.new_items
    if new is not None and vectors is not None and (~inside).any():
        rows = {int(i): r for r, i in enumerate(new.index.tolist())}
        for t in np.flatnonzero(~inside).tolist():
            r = rows.get(int(targets[t]))
            if r is not None:
                sims[t] = (new.items.vectors[r] @ vectors[mine].T).toarray().ravel()
    out: list[str | None] = []
    for row in sims:
        best = int(np.argmax(row))
        item = int(mine[best])
        title = live.catalog.title[item] or live.catalog.item_ids[item]
        out.append(str(title) if row[best] > 0 else None)
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


def _plain(text: str) -> str:
    """The pipeline says "Because you bought X"; the API's reasons start in lower case."""
    return text[:1].lower() + text[1:] if text else text


# -- items added since training ------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogNewItems:
    """Available catalogue items the model was not trained on, encoded for the pipeline."""

    index: np.ndarray  # catalogue indices
    items: NewItems


def new_items(live: Live) -> CatalogNewItems | None:
    """Encode the catalogue's items past the model's (None: not the hybrid, or none new)."""
    hybrid = hybrid_of(live.model.model)
    if hybrid is None:
        return None
    catalog = live.catalog
    start = live.model.n_items
    index = start + np.flatnonzero(catalog.available[start:])
    if not len(index):
        return None
    content = _content_model(hybrid)
    if content is None or content.features is None:
        return None
    frame = pd.DataFrame(
        {
            "item_id": catalog.item_ids[index],
            "title": catalog.title[index],
            "category": catalog.category[index],
            "brand": catalog.brand[index],
            "tags": [list(t) if t else None for t in catalog.tags[index]],
            "price": catalog.price[index],
        }
    )
    features = content.features
    vectors = features.encode(frame)
    if features.category_inferred:
        category = frame["title"].map(infer_category).to_numpy(dtype=object)
    else:
        category = frame["category"].fillna("").to_numpy(dtype=object)
    brand = frame["brand"].fillna("").map(lambda b: str(b).strip()).to_numpy(dtype=object)
    price = frame["price"].to_numpy(np.float64)
    return CatalogNewItems(index.astype(np.int64), NewItems(vectors, price, category, brand))


def _content_model(hybrid: HybridModel) -> ContentModel | None:
    stage = hybrid.hybrid.stage if hybrid.hybrid is not None else None
    for generator in getattr(stage, "generators", []):
        if generator.name == "content" and isinstance(generator.model, ContentModel):
            return generator.model
    return None


def similar_with_new(
    live: Live, item: int, items: np.ndarray, scores: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The model's neighbours of `item` with the new items like it merged in by score
    (the hybrid's item similarity gives a new item its content share only)."""
    new = live.new_items
    hybrid = hybrid_of(live.model.model)
    vectors = hybrid.content_vectors() if hybrid is not None else None
    if new is None or vectors is None or item >= vectors.shape[0]:
        return items, scores
    cosine = np.asarray((new.items.vectors @ vectors[item].T).todense()).ravel()
    close = np.flatnonzero(cosine >= NEW_MIN_COSINE)
    if not len(close):
        return items, scores
    merged_items = np.concatenate([items, new.index[close]])
    merged = np.concatenate([scores, NEW_ITEM_SIMILARITY * cosine[close]])
    order = np.argsort(-merged, kind="stable")[:n]
    return merged_items[order], merged[order].astype(np.float32)


def new_item_neighbours(live: Live, item: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Trained items like a new item, by content (None when the model cannot say)."""
    new = live.new_items
    hybrid = hybrid_of(live.model.model)
    vectors = hybrid.content_vectors() if hybrid is not None else None
    if new is None or vectors is None:
        return None
    rows = np.flatnonzero(new.index == item)
    if not len(rows):
        return None
    cosine = np.asarray((vectors @ new.items.vectors[int(rows[0])].T).todense()).ravel()
    scores = np.where(cosine > 0, NEW_ITEM_SIMILARITY * cosine, -np.inf)
    return best_of(scores.astype(np.float32), n)
