"""The hybrid pipeline's request path (`RequestPath`): its lists, its ranking per request,
its reasons and the items added since training.

- Trained users with nothing new since training: the lists `nextbuy train` precomputed with
  the pipeline (`HybridModel.prepare_to_serve`), the head of them with the pipeline's reasons.
- Shoppers with events since training, anonymous sessions, and requests whose context the
  ranker reads: the pipeline runs on the request (`OnlineRanker`): its generators'
  candidates from the trained history plus the new events, features from arrays built at
  load, LightGBM on those rows.
- Items added since training: their content is encoded with the pipeline's vocabularies as
  soon as the catalogue changes (`new_items`); they join the similar-items lists of the items
  they resemble and, as candidates of the content generator, the pool of shoppers who just
  looked at such items.

Model item indices are the pipeline's stage indices and the catalogue's first indices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nextbuy.data.catalog_text import infer_category
from nextbuy.hybrid.explain import reasons
from nextbuy.hybrid.online import FreshEvent, NewItems, OnlineScored
from nextbuy.hybrid.request_reasons import (
    cells,
    item_facts,
    occlusion_contributions,
    plain,
    row_products,
)
from nextbuy.models.base import best_of
from nextbuy.models.content_model import ContentModel
from nextbuy.models.requests import Ranking, RankingContext, ShopperView
from nextbuy.rules.base import positions_in
from nextbuy.rules.catalog import ItemCatalog

if TYPE_CHECKING:
    from nextbuy.hybrid.model import HybridModel

CONTENT_SIMILARITY_WEIGHT = 0.5  # content cosine's share in item-to-item similarity
NEW_MIN_COSINE = 0.3  # content cosine from which a new item counts as like another
NEW_ANCHORS = 5  # the shopper's latest items whose new look-alikes join the pool
NEW_PER_REQUEST = 50  # new items ranked per request at most
NS_PER_MS = 1_000_000
# A new item has no co-purchases yet: its content cosine stands in for the (0..1) kNN
# similarity it will earn, on top of the content share every item gets.
NEW_ITEM_SIMILARITY = 1.0 + CONTENT_SIMILARITY_WEIGHT


@dataclass
class Ranked:
    """What the request ranked: kept for the reasons of the same request."""

    scored: OnlineScored
    catalog_items: np.ndarray  # catalogue index of each candidate row


@dataclass(frozen=True)
class CatalogNewItems:
    """Available catalogue items the model was not trained on, encoded for the pipeline."""

    index: np.ndarray  # catalogue indices
    items: NewItems


class HybridRequests:
    """`RequestPath` of a fitted `HybridModel`."""

    def __init__(self, model: HybridModel) -> None:
        self.model = model

    @property
    def reads_context(self) -> bool:
        return self.model.online.reads_context

    # -- lists precomputed at training ---------------------------------------------------------
    def precomputed_lists(self, user_ids: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
        users = list(user_ids)
        found = self.model.precomputed_lists(users, n)
        if found is None:  # trained from Python without lists: make them now, once per load
            self.model.prepare_to_serve(users, n)
            found = self.model.precomputed_lists(users, n)
        assert found is not None
        return found

    # -- a shopper with events since training, or a request in context -------------------------
    def rank(
        self,
        shopper: ShopperView,
        key: str,
        n: int,
        exclude_seen: bool,
        context: RankingContext | None,
        catalog: ItemCatalog,
        new: CatalogNewItems | None,
    ) -> Ranking:
        online = self.model.online
        user, fresh = _pipeline_inputs(shopper)
        new_index, encoded = self._new_candidates(shopper, catalog, new)
        scored = online.score(user, fresh, time.time_ns(), context, new=encoded, cache_as=key)
        items = scored.candidates.items
        catalog_items = items.copy()
        beyond = items >= online.n_items
        catalog_items[beyond] = new_index[items[beyond] - online.n_items]
        order = scored.order.copy()
        if exclude_seen and len(shopper.cols):
            order[np.isin(catalog_items, shopper.cols)] = -np.inf
        best, values = best_of(order, n)
        ranked = Ranked(scored, catalog_items)
        return Ranking(catalog_items[best], values, scored.generated_before, ranked)

    def _new_candidates(
        self, shopper: ShopperView, catalog: ItemCatalog, new: CatalogNewItems | None
    ) -> tuple[np.ndarray, NewItems | None]:
        """New items whose content is like one of the shopper's latest items."""
        nothing = np.zeros(0, np.int64), None
        vectors = self.model.content_vectors() if new is not None else None
        if new is None or vectors is None or not shopper.recent:
            return nothing
        anchors = _latest_model_items(catalog, shopper, vectors.shape[0])
        if not len(anchors):
            return nothing
        cosine = np.asarray((new.items.vectors @ vectors[anchors].T).todense()).max(axis=1)
        close = np.flatnonzero(cosine >= NEW_MIN_COSINE)
        close = close[np.argsort(-cosine[close], kind="stable")][:NEW_PER_REQUEST]
        if not len(close):
            return nothing
        return new.index[close], new.items.take(close)

    # -- reasons -----------------------------------------------------------------------------------
    def reasons(
        self,
        shopper: ShopperView,
        items: list[int],
        ranking: Ranking | None,
        catalog: ItemCatalog,
        new: CatalogNewItems | None,
    ) -> dict[int, str]:
        ranked = ranking.state if ranking is not None else None
        if not isinstance(ranked, Ranked):
            if shopper.trained and shopper.user_id is not None and not shopper.recent:
                found = self.model.reasons_of(shopper.user_id)
                return {i: plain(found[i]) for i in items if i in found}
            return {}
        listed = np.asarray(items, np.int64)
        at = positions_in(ranked.catalog_items, listed)
        known = at >= 0
        if not known.any():
            return {}
        explained, positions = listed[known].tolist(), at[known]
        online = self.model.online
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
        anchors = self._anchor_titles(shopper, explained, catalog, new)
        facts = item_facts(catalog, explained, x, online.feature_order, anchors)
        found = reasons(contributions, online.feature_order, facts, origins)
        return {i: plain(r.text) for i, r in zip(explained, found, strict=True)}

    def _anchor_titles(
        self,
        shopper: ShopperView,
        items: list[int],
        catalog: ItemCatalog,
        new: CatalogNewItems | None,
    ) -> list[str | None]:
        """Per item, the title of the shopper's latest item most like it (kNN, else content)."""
        n_stage = self.model.online.n_items
        mine = _latest_model_items(catalog, shopper, n_stage)
        if not len(mine):
            mine = shopper.history[shopper.history < n_stage][:NEW_ANCHORS]
        if not len(mine):
            return [None] * len(items)
        targets = np.asarray(items, np.int64)
        inside = targets < n_stage
        sims = np.zeros((len(targets), len(mine)))
        vectors = self.model.content_vectors()
        if vectors is not None:
            # content for new items (kNN knows nothing of them); kNN first for the rest
            sims[inside] = 1e-3 * row_products(vectors, targets[inside], mine)
        similarity = self._knn_similarity()
        if similarity is not None and inside.any():
            sims[inside] += cells(similarity, targets[inside], mine)
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
            title = catalog.title[item] or catalog.item_ids[item]
            out.append(str(title) if row[best] > 0 else None)
        return out

    def _knn_similarity(self) -> object | None:
        """The "because you bought" generator's item similarity, when the pipeline has one."""
        stage = self.model.hybrid.stage if self.model.hybrid is not None else None
        knn = next((g.model for g in getattr(stage, "generators", []) if g.name == "recent"), None)
        return getattr(knn, "similarity", None)

    # -- items added since training ----------------------------------------------------------------
    def new_items(self, catalog: ItemCatalog) -> CatalogNewItems | None:
        start = self.model.n_items
        index = start + np.flatnonzero(catalog.available[start:])
        if not len(index):
            return None
        content = self._content_model()
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

    def _content_model(self) -> ContentModel | None:
        stage = self.model.hybrid.stage if self.model.hybrid is not None else None
        for generator in getattr(stage, "generators", []):
            found = generator.content_model()
            if found is not None:
                return found
        return None

    def similar_with_new(
        self,
        item: int,
        items: np.ndarray,
        scores: np.ndarray,
        n: int,
        new: CatalogNewItems | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The hybrid's item similarity gives a new item its content share only: the new
        items like `item` join by their content cosine."""
        vectors = self.model.content_vectors()
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

    def new_item_neighbours(
        self, item: int, n: int, new: CatalogNewItems | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        vectors = self.model.content_vectors()
        if new is None or vectors is None:
            return None
        rows = np.flatnonzero(new.index == item)
        if not len(rows):
            return None
        cosine = np.asarray((vectors @ new.items.vectors[int(rows[0])].T).todense()).ravel()
        scores = np.where(cosine > 0, NEW_ITEM_SIMILARITY * cosine, -np.inf)
        return best_of(scores.astype(np.float32), n)

    # -- candidates generated ahead of a request ---------------------------------------------------
    def prepare(self, key: str, shopper: ShopperView, between: Callable[[], None]) -> bool:
        user, fresh = _pipeline_inputs(shopper)
        return self.model.online.prepare(key, user, fresh, time.time_ns(), between)

    def forget(self, key: str) -> None:
        self.model.online.generated.forget(key)

    def keep_at_most(self, shoppers: int) -> None:
        self.model.online.generated.max_entries = shoppers


def _pipeline_inputs(shopper: ShopperView) -> tuple[str | None, list[FreshEvent]]:
    """The user whose trained events the pipeline reads, and what they did since."""
    fresh = [FreshEvent(e.item_id, e.event_type, e.ts_ms * NS_PER_MS) for e in shopper.recent]
    # an erased or unknown user has no trained events to read
    return (shopper.user_id if shopper.trained else None), fresh


def _latest_model_items(catalog: ItemCatalog, shopper: ShopperView, n_stage: int) -> np.ndarray:
    index = catalog.index
    out: list[int] = []
    for event in reversed(shopper.recent):
        at = index.get(event.item_id)
        if at is not None and at < n_stage and at not in out:
            out.append(at)
            if len(out) == NEW_ANCHORS:
                break
    return np.asarray(out, np.int64)
