"""One model version made ready to serve: everything a request needs, computed at load.

Loading a version (in the background, while the previous one keeps serving) does:

- the validation gate: the artifact loads, covers items, and scores a sample of users with
  finite numbers; a version that fails is never swapped in;
- precomputation: the top `candidates` items (indices + scores) of every trained user,
  scored in blocks exactly as a request would; a request from a user with no event since
  training then costs a row lookup instead of a scoring pass over the catalogue;
- the non-personal lists: all-time popularity and trending (decayed daily totals);
- a frequently-bought-together model for bought-together and cart cross-sell: the serving
  model itself when it is "fbt", otherwise one fitted here on the training matrix's baskets
  (orders, or sessions); fitting takes seconds for 100k items and keeps the registry's
  artifacts model-agnostic;
- each user's purchases (count and last time per item) from the store, for buy-again and
  for the rules that know when something was bought.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from nextbuy.config import Settings
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.engine import Engine
from nextbuy.errors import DataError, NextbuyError
from nextbuy.models import FrequentlyBoughtTogether, Recommender, TrendingModel
from nextbuy.models.popularity import item_popularity
from nextbuy.store.base import Store
from nextbuy.store.registry import Version

log = logging.getLogger("nextbuy.serving")

PRECOMPUTE_BLOCK = 2048  # users scored per block while precomputing
GATE_SAMPLE = 64  # users the validation gate scores
NON_PERSONAL_DEPTH = 2000  # length of the popular and trending lists kept
NEIGHBOUR_CACHE = 50_000  # similar / bought-together lists kept per loaded version


class ModelRejected(NextbuyError):
    """A version failed the serving validation gate; the previous one stays in service."""


@dataclass
class Purchases:
    """Per user: purchased item ids, how often, and the last time (ms)."""

    user_row: dict[str, int] = field(default_factory=dict)
    indptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, object))
    item_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # model, or -1
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    last_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    watermark_ms: int = 0  # the latest purchase time read; later ones come from online state

    def of(self, user_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(item ids, model indices or -1, counts, last purchase ms) of one user."""
        row = self.user_row.get(user_id)
        lo, hi = (0, 0) if row is None else (self.indptr[row], self.indptr[row + 1])
        return self.item_ids[lo:hi], self.item_idx[lo:hi], self.counts[lo:hi], self.last_ms[lo:hi]


@dataclass
class ServingModel:
    """A loaded version with its precomputed lists; never changed after `build`."""

    version: str
    meta: dict[str, Any]
    engine: Engine
    model: Recommender
    data: InteractionMatrix
    top_items: np.ndarray  # int32 (n_users, N) model indices, -1 padded
    top_scores: np.ndarray  # float32 (n_users, N)
    popular: np.ndarray  # model indices, most popular first
    popularity: np.ndarray  # float32 per model item
    trending: np.ndarray  # model indices, most trending first
    trending_scores: np.ndarray
    fbt: FrequentlyBoughtTogether | None
    purchases: Purchases
    cut_ms: int  # training data's latest event: online events after it are "since training"
    trained_at_ms: int
    loaded_at_ms: int
    load_seconds: float = 0.0
    # Neighbour lists asked for since load: product pages have a head of popular items, and
    # some models (factor models) compare an item with the whole catalogue to find them.
    _neighbours: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )

    @property
    def model_name(self) -> str:
        return str(self.meta.get("model", self.engine.model_name))

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def trained_row(self, user_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(model item indices, weights) of this user's trained history; None when unknown."""
        row = self.data.user_index.get(user_id)
        if row is None:
            return None
        matrix = self.data.matrix
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        return matrix.indices[lo:hi].astype(np.int64), matrix.data[lo:hi]

    def similar(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n items most like `item` by the serving model (model indices, scores)."""
        return self._cached("similar", item, n)

    def bought_together(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n best partners of `item` in baskets (empty without a basket model)."""
        if self.fbt is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return self._cached("fbt", item, n)

    def _cached(self, kind: str, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        key = (kind, item, n)
        found = self._neighbours.get(key)
        if found is None:
            found = self.model.similar_to(item, n) if kind == "similar" else self._partners(item, n)
            if len(self._neighbours) >= NEIGHBOUR_CACHE:
                self._neighbours.clear()  # crude but bounded; the head refills at once
            self._neighbours[key] = found
        return found

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        """How much each history item adds to each target's score (the model says)."""
        return self.model.contributions(hist, weights, targets)

    def _partners(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.fbt is not None
        return self.fbt.partners(item, n)

    @cached_property
    def trending_ranked_scores(self) -> np.ndarray:
        return self.trending_scores[self.trending]

    @cached_property
    def popular_ranked_scores(self) -> np.ndarray:
        return self.popularity[self.popular]

    def precomputed(self, user_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        row = self.data.user_index.get(user_id)
        if row is None:
            return None
        items, scores = self.top_items[row], self.top_scores[row]
        valid = items >= 0
        return items[valid].astype(np.int64), scores[valid]


def build_serving_model(
    engine: Engine, version: Version, settings: Settings, store: Store | None
) -> ServingModel:
    """Validate and precompute; raises ModelRejected when the version must not serve."""
    started = time.perf_counter()
    model, data = engine.model, engine.data
    if model is None or data is None:
        raise ModelRejected(f"{version.name}: the artifact holds no trained model")
    _gate(version.name, model, data)
    n = settings.serving.candidates
    # One BLAS thread: the other core keeps answering requests while this runs.
    with threadpool_limits(1):
        path = model.request_path()
        if path is not None:  # the model's own lists, made with its own candidates
            top_items, top_scores = path.precomputed_lists(list(data.user_ids), n)
        else:
            excludes_seen = settings.training.excludes_seen(version.meta)
            top_items, top_scores = precompute(model, data, n, excludes_seen)
        popularity = item_popularity(data, "users")
        trending_scores = _trending(data, popularity)
        fbt = _fbt(model, data)
    purchases = read_purchases(store, data) if store is not None else Purchases()
    served = ServingModel(
        version=version.name,
        meta=version.meta,
        engine=engine,
        model=model,
        data=data,
        top_items=top_items,
        top_scores=top_scores,
        popular=_order(popularity),
        popularity=popularity,
        trending=_order(trending_scores),
        trending_scores=trending_scores,
        fbt=fbt,
        purchases=purchases,
        cut_ms=_cut_ms(data, version.meta),
        trained_at_ms=_iso_ms(version.meta.get("trained_at")) or int(time.time() * 1000),
        loaded_at_ms=int(time.time() * 1000),
    )
    model.keep_contiguous(served.popular)  # request pools lead with the popular head
    served.load_seconds = time.perf_counter() - started
    return served


def _gate(name: str, model: Recommender, data: InteractionMatrix) -> None:
    if data.n_items == 0 or data.n_users == 0:
        raise ModelRejected(f"{name}: trained on an empty matrix")
    if model.n_items != data.n_items:
        raise ModelRejected(f"{name}: model has {model.n_items} items, matrix {data.n_items}")
    rng = np.random.default_rng(0)
    sample = rng.choice(data.n_users, size=min(GATE_SAMPLE, data.n_users), replace=False)
    top = model.recommend(data.matrix[np.sort(sample)], 10)
    scores = top.scores[top.items >= 0]
    if np.isnan(scores).any() or np.isposinf(scores).any():
        raise ModelRejected(f"{name}: scores are not finite numbers")
    if not (top.items >= 0).any():
        raise ModelRejected(f"{name}: recommends nothing for any sampled user")


def precompute(
    model: Recommender, data: InteractionMatrix, n: int, exclude_seen: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n model indices and scores of every trained user, in blocks of users."""
    items = np.full((data.n_users, n), -1, np.int32)
    scores = np.full((data.n_users, n), -np.inf, np.float32)
    for start in range(0, data.n_users, PRECOMPUTE_BLOCK):
        block = data.matrix[start : start + PRECOMPUTE_BLOCK]
        top = model.recommend(block, n, exclude=block if exclude_seen else None)
        items[start : start + block.shape[0]] = top.items
        scores[start : start + block.shape[0]] = top.scores
    return items, scores


def _trending(data: InteractionMatrix, popularity: np.ndarray) -> np.ndarray:
    try:
        return TrendingModel().fit(data).item_scores
    except DataError:
        return popularity.copy()  # undated data: nothing is more recent than anything else


def _fbt(model: Recommender, data: InteractionMatrix) -> FrequentlyBoughtTogether | None:
    own = model.basket_model()
    if own is not None:
        return own
    if data.baskets is None or data.baskets.shape[0] == 0:
        return None
    try:
        return FrequentlyBoughtTogether(neighbours=50).fit(data)
    except DataError as exc:
        log.warning("no bought-together model: %s", exc)
        return None


def _order(scores: np.ndarray) -> np.ndarray:
    finite = np.flatnonzero(np.isfinite(scores) & (scores > 0))
    order = finite[np.lexsort((finite, -scores[finite]))]
    return order[:NON_PERSONAL_DEPTH].astype(np.int64)


def read_purchases(store: Store, data: InteractionMatrix) -> Purchases:
    """Every stored purchase, reduced to (user, item) -> count and last time."""
    grouped = store.purchase_summary()
    if grouped.empty:
        return Purchases()
    grouped = grouped.sort_values(["user_id", "item_id"], kind="stable").reset_index(drop=True)
    users, starts = np.unique(grouped["user_id"].to_numpy(object), return_index=True)
    indptr = np.append(starts, len(grouped)).astype(np.int64)
    return Purchases(
        user_row={str(u): i for i, u in enumerate(users)},
        indptr=indptr,
        item_ids=grouped["item_id"].to_numpy(object),
        item_idx=grouped["item_id"].map(data.item_index).fillna(-1).to_numpy(np.int64),
        counts=grouped["size"].to_numpy(np.float64),
        last_ms=grouped["max"].to_numpy(np.int64),
        watermark_ms=int(grouped["max"].max()),
    )


def _cut_ms(data: InteractionMatrix, meta: dict[str, Any]) -> int:
    if data.reference_time is not None:
        return int(data.reference_time.value // 1_000_000)
    return _iso_ms(meta.get("last_event")) or 0


def _iso_ms(text: Any) -> int | None:
    if not text:
        return None
    try:
        moment = pd.Timestamp(text if not isinstance(text, datetime) else text.isoformat())
    except (ValueError, TypeError):
        return None
    if pd.isna(moment):
        return None
    if moment.tzinfo is None:
        moment = moment.tz_localize("UTC")
    return int(moment.value // 1_000_000)
