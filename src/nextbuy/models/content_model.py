"""Content-based recommendations, and a map from content to collaborative item factors.

`ContentModel` ("content") scores items by how close their content vector is to the user's
profile: the mean of the content vectors of the items in the history row, weighted by the
row's values. Those values are event weight × time decay when the matrix is built with a
half-life, so the profile is the decayed, event-weighted mean the design asks for. Any item
with content can be recommended, including items nobody has interacted with yet: build the
matrix with `item_ids=` the catalogue so they have columns.

`FactorMapping` learns a ridge regression from content vectors to an ALS/BPR model's item
factors; `extend_factors` then gives a new item (no interactions) factors predicted from its
content, so it takes part in collaborative recommendations on its first day.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import Ridge

from nextbuy.data.content import ContentFeatures, EmbeddingChoice
from nextbuy.data.embeddings import SentenceEncoder
from nextbuy.data.files import pack_csr, unpack_csr
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import ConfigError, DataError, NotFittedError
from nextbuy.models.base import Recommender, TopK, accumulate, entries, mask_empty
from nextbuy.models.request_top import dense_best, nothing

OUT_OF_RANGE_PENALTY = 1.0  # subtracted from items outside an onboarding price range


class ContentModel(Recommender):
    """Cosine similarity of item content to the user's weighted-mean content profile.

    `popularity_weight` adds that much of log popularity (0..1) to every score: 0 is pure
    content; a little helps cold users, for whom "close in content and also sold" beats
    "close in content" alone. Items without any content score -inf.
    """

    name = "content"

    def __init__(
        self,
        embeddings: EmbeddingChoice = "auto",
        text_weight: float = 1.0,
        categorical_weight: float = 0.5,
        embedding_weight: float = 1.0,
        popularity_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if min(text_weight, categorical_weight, embedding_weight, popularity_weight) < 0:
            raise ConfigError("content model weights must be >= 0")
        self.embeddings = embeddings
        self.text_weight = text_weight
        self.categorical_weight = categorical_weight
        self.embedding_weight = embedding_weight
        self.popularity_weight = popularity_weight
        self.features: ContentFeatures | None = None
        self.vectors = sp.csr_matrix((0, 0), dtype=np.float32)  # items × content features
        self.popularity = np.zeros(0, np.float32)  # log popularity, 0..1
        self.has_content = np.zeros(0, bool)

    def use_features(self, features: ContentFeatures) -> ContentModel:
        """Fit on these (already encoded) features instead of building them from `items`."""
        self.features = features
        return self

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        features = self.features
        if features is None:
            if items is None:
                raise DataError("the content model needs the items table (title, category, ...)")
            features = ContentFeatures.build(items, embeddings=self.embeddings)
        # a copy with this model's block weights: the features may be shared with others
        weights = {
            "text": self.text_weight,
            "categorical": self.categorical_weight,
            "embedding": self.embedding_weight,
        }
        features = dataclasses.replace(features, weights=weights)
        self.features = features
        self.vectors = features.aligned(list(data.item_ids))
        self.has_content = np.diff(self.vectors.indptr) > 0
        users = np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.float64)
        scaled = np.log1p(users)
        self.popularity = (scaled / max(scaled.max(initial=0.0), 1e-12)).astype(np.float32)

    # -- scoring ---------------------------------------------------------------------------------
    def profiles(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        """Each history row's weighted-mean content vector, scaled to unit length."""
        return sp.csr_matrix(self.dense_profiles(histories))

    def dense_profiles(self, histories: sp.csr_matrix) -> np.ndarray:
        """`profiles` as a dense (rows, content features) float32 array."""
        # sorted: the sums below then add in one order whichever way the rows were built
        histories = sp.csr_matrix(histories, dtype=np.float32).sorted_indices()
        n, width = histories.shape[0], self.vectors.shape[1]
        row = np.repeat(np.arange(n), np.diff(histories.indptr))
        at, terms, values = entries(self.vectors, histories.indices)
        # the weighted sum of the rows' item vectors, as |histories| @ vectors would add it
        weights = np.abs(histories.data[at])
        profile = accumulate(n * width, row[at] * width + terms, weights, values)
        profile = profile.reshape(n, width)
        norms = np.sqrt(np.einsum("ij,ij->i", profile, profile))
        profile *= (1.0 / np.where(norms > 0, norms, 1.0)).astype(np.float32)[:, None]
        return profile

    def score_profiles(
        self, profiles: sp.spmatrix | np.ndarray, popularity_weight: float | None = None
    ) -> np.ndarray:
        """Dense (n, n_items) scores of content profiles (rows in the `vectors` space).

        One pass over the item vectors per profile (sparse items × dense profile): a
        profile shares some feature with most items, so a sparse × sparse product would
        touch them all anyway, at three times the cost.
        """
        weight = self.popularity_weight if popularity_weight is None else popularity_weight
        dense = profiles.toarray() if sp.issparse(profiles) else profiles
        dense = np.asarray(dense, np.float32)
        scores = np.ascontiguousarray((self.vectors @ dense.T).T, dtype=np.float32)
        if weight:
            scores += np.float32(weight) * self.popularity
        scores[:, ~self.has_content] = -np.inf
        return scores

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """`_score`'s arithmetic (one pass over the item vectors, plus the popularity term),
        without its copies, then the top n of the dense row."""
        if not row.nnz:  # mask_empty: no history, nothing to go on
            return nothing(n)
        base = self._prepared("base", self._popularity_term)
        scores = self.vectors @ self.dense_profiles(row)[0]
        scores += base
        if blocked is not None:
            scores[blocked] = -np.inf
        return dense_best(scores, n)

    def _popularity_term(self) -> np.ndarray:
        """The popularity term `score_profiles` adds, -inf where an item has no content."""
        weight = self.popularity_weight
        base = np.float32(weight) * self.popularity if weight else np.zeros(self.n_items)
        return np.where(self.has_content, base, -np.inf).astype(np.float32)

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        return mask_empty(self.score_profiles(self.dense_profiles(histories)), histories)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        scores = np.asarray((self.vectors[items] @ self.vectors.T).toarray(), dtype=np.float32)
        scores[:, ~self.has_content] = -np.inf
        return scores

    def onboarding_scores(
        self,
        categories: Sequence[str] = (),
        brands: Sequence[str] = (),
        price_min: float | None = None,
        price_max: float | None = None,
        *,
        text: str = "",
        encoder: SentenceEncoder | None = None,
        popularity_weight: float = 0.3,
    ) -> np.ndarray:
        """(n_items,) scores for a new customer from their onboarding answers.

        Content close to the chosen categories and brands, plus popularity (so the best
        sellers of those categories lead), minus a penalty outside the price range.
        """
        if self.features is None:
            raise NotFittedError("the content model is not fitted")
        query = self.features.query_vector(text, categories, brands, encoder)
        scores = self.score_profiles(query, popularity_weight)[0]
        price = self._item_prices()
        outside = np.zeros(self.n_items, bool)
        if price_min is not None:
            outside |= price < price_min
        if price_max is not None:
            outside |= price > price_max
        scores[outside & np.isfinite(scores)] -= OUT_OF_RANGE_PENALTY
        return scores

    def _item_prices(self) -> np.ndarray:
        assert self.features is not None and self.item_ids is not None
        pos = self.features.positions(list(self.item_ids))
        return np.where(pos >= 0, self.features.price[np.maximum(pos, 0)], np.nan)

    # -- persistence -----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "embeddings": self.embeddings,
            "text_weight": self.text_weight,
            "categorical_weight": self.categorical_weight,
            "embedding_weight": self.embedding_weight,
            "popularity_weight": self.popularity_weight,
        }

    def _state(self) -> dict[str, np.ndarray]:
        if self.features is None:
            raise NotFittedError("the content model is not fitted")
        return {
            **pack_csr("vectors", self.vectors),
            "popularity": self.popularity,
            "has_content": self.has_content,
            **self.features.to_arrays("features."),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.vectors = unpack_csr("vectors", state)
        self.popularity = state["popularity"]
        self.has_content = state["has_content"]
        self.features = ContentFeatures.from_arrays(state, "features.")


class FactorMapping:
    """Ridge regression from content vectors to collaborative item factors.

    Fitted on the items the factor model was trained on, each weighted by log(1 + users) since
    the factors of rarely bought items are mostly noise. Predicts factors for any item with
    content; an item without content gets the mean factor vector.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        if alpha <= 0:
            raise ConfigError("the factor mapping needs alpha > 0")
        self.alpha = alpha
        self.coef = np.zeros((0, 0), np.float32)  # content features × factors
        self.intercept = np.zeros(0, np.float32)

    def fit(
        self,
        vectors: sp.csr_matrix,
        factors: np.ndarray,
        trained: np.ndarray,
        users_per_item: np.ndarray | None = None,
    ) -> FactorMapping:
        """Learn factors[trained] ≈ vectors[trained] @ coef + intercept."""
        rows = np.flatnonzero(trained & (np.diff(sp.csr_matrix(vectors).indptr) > 0))
        if len(rows) < 2:
            raise DataError("the factor mapping needs at least two trained items with content")
        weight = None if users_per_item is None else np.log1p(users_per_item[rows])
        ridge = Ridge(alpha=self.alpha, fit_intercept=True)
        ridge.fit(vectors[rows], factors[rows], sample_weight=weight)
        self.coef = np.asarray(ridge.coef_, np.float32).T
        self.intercept = np.asarray(ridge.intercept_, np.float32).reshape(-1)
        return self

    def predict(self, vectors: sp.csr_matrix) -> np.ndarray:
        """(n, factors) predicted item factors."""
        if self.coef.size == 0:
            raise NotFittedError("the factor mapping is not fitted")
        return np.asarray(vectors @ self.coef, np.float32) + self.intercept

    def state(self, prefix: str = "mapping.") -> dict[str, np.ndarray]:
        return {f"{prefix}coef": self.coef, f"{prefix}intercept": self.intercept}

    @classmethod
    def from_state(
        cls, state: dict[str, np.ndarray], alpha: float = 1.0, prefix: str = "mapping."
    ) -> FactorMapping:
        mapping = cls(alpha)
        mapping.coef = state[f"{prefix}coef"]
        mapping.intercept = state[f"{prefix}intercept"]
        return mapping


def extend_factors(model: Recommender, mapping: FactorMapping, vectors: sp.csr_matrix) -> Any:
    """A copy of a fitted ALS/BPR model whose untrained items get factors mapped from content.

    `vectors` are content rows aligned to the model's items. The copy scores those items like
    any other; trained items keep their learnt factors. The user fold-in now also sees the
    mapped items in its Gram matrix, a small change that lets the copy score them at all.
    """
    factors = getattr(model, "item_factors", None)
    trained = getattr(model, "trained", None)
    if factors is None or trained is None:
        raise ConfigError(f"model {model.name!r} has no item factors to extend")
    new = ~trained & (np.diff(sp.csr_matrix(vectors).indptr) > 0)
    extended = copy.copy(model)
    extended.__dict__.pop("_request_cache", None)  # the copy's factors differ: its own cache
    predicted = mapping.predict(vectors[np.flatnonzero(new)])
    if model.name == "bpr":  # implicit keeps the item bias as BPR's last factor column
        predicted[:, -1] = np.minimum(predicted[:, -1], np.median(factors[trained, -1]))
    extended.item_factors = factors.copy()  # type: ignore[attr-defined]
    extended.item_factors[new] = predicted  # type: ignore[attr-defined]
    extended.trained = trained | new  # type: ignore[attr-defined]
    extended._solver = None  # type: ignore[attr-defined]
    return extended
