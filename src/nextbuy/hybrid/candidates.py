"""Candidate generators, and their merge into one de-duplicated set that keeps each origin.

Every generator proposes its top `n` items per user from the same item index (the columns of
the stage's `InteractionMatrix`). The merge keeps, per (user, item), every generator's score
and rank, so the ranker sees who proposed a candidate and how strongly, and an explanation
can name the generator.

| name | what it proposes |
|---|---|
| als | ALS, with new items given factors mapped from their content |
| ease | EASE item-item linear model over the whole (decayed) history |
| itemknn | item kNN over the whole history |
| recent | item kNN from the last few items the user touched ("because you bought X") |
| content | items whose content is closest to the user's content profile |
| trending | items bought most lately (7-day half-life), the same for everyone |
| category | best sellers of the user's categories ("popular in X") |
| buy_again | the user's own items by decayed weight (the repeat-aware protocol only) |
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.content import ContentFeatures
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import ConfigError, DataError
from nextbuy.models import create_model, model_class
from nextbuy.models.base import Recommender, TopK
from nextbuy.models.content_model import ContentModel, FactorMapping, extend_factors

GENERATOR_NAMES: tuple[str, ...] = (
    "als",
    "ease",
    "itemknn",
    "recent",
    "content",
    "trending",
    "category",
    "buy_again",
)
MISSING_RANK = 1000.0  # rank given to a candidate a generator did not propose


@dataclass
class CandidateRequest:
    """What the generators see of the users to serve, one row each."""

    histories: sp.csr_matrix  # users × items: event weight × decay, summed
    recent: sp.csr_matrix  # users × items: the last few items, the latest weighing most
    # users × items already had: generators propose n items beyond them (None: anything)
    exclude: sp.csr_matrix | None
    # Lists may repeat purchases: a generator proposes n new items and keeps the had items
    # of its unexcluded top n (their ranks are what the ranker weighs a repurchase by);
    # buy-again proposes had items only.
    keep_seen: bool = False

    @property
    def n_users(self) -> int:
        return int(self.histories.shape[0])


def had_mask(items: np.ndarray, had: sp.csr_matrix) -> np.ndarray:
    """Per list place, whether the row's user had that item (padding: False)."""
    rows = np.repeat(np.arange(items.shape[0]), items.shape[1])
    found = np.asarray(had[rows, np.maximum(items.ravel(), 0)]).ravel() != 0
    return found.reshape(items.shape) & (items >= 0)


def keep_new(top: TopK, had: np.ndarray, n: int) -> TopK:
    """Each row's first n items the user had not had, and the had items among the list's
    first n places (as the generator would rank them were nothing excluded), in the list's
    order; the rest is padding."""
    new = ~had & (top.items >= 0)
    first = np.arange(top.items.shape[1])[None, :] < n
    keep = (new & (np.cumsum(new, axis=1) <= n)) | (had & first)
    order = np.argsort(~keep, axis=1, kind="stable")  # kept places first, in list order
    items = np.take_along_axis(top.items, order, axis=1)
    scores = np.take_along_axis(top.scores, order, axis=1)
    kept = np.take_along_axis(keep, order, axis=1)
    width = max(int(kept.sum(axis=1).max(initial=0)), n)
    items, scores, kept = items[:, :width], scores[:, :width], kept[:, :width]
    return TopK(np.where(kept, items, -1), np.where(kept, scores, -np.inf).astype(np.float32))


@dataclass
class CandidateSet:
    """De-duplicated (user row, item) candidates with every generator's score and rank.

    Sorted by row then item, so each user's candidates are one contiguous group.
    """

    rows: np.ndarray  # int64 request row of each candidate
    items: np.ndarray  # int64 item column
    scores: np.ndarray  # float32 (n, n_generators), NaN where not proposed
    ranks: np.ndarray  # float32 (n, n_generators), MISSING_RANK where not proposed
    generators: tuple[str, ...]
    n_users: int

    def __len__(self) -> int:
        return len(self.rows)

    def group_sizes(self) -> np.ndarray:
        """Candidates per request row (LightGBM's query groups), zeros included."""
        return np.bincount(self.rows, minlength=self.n_users)

    def origin(self) -> np.ndarray:
        """Index of the generator that ranked each candidate highest."""
        return np.argmin(self.ranks, axis=1)

    def sources(self) -> list[list[str]]:
        """The names of the generators that proposed each candidate, best rank first."""
        proposed = self.ranks < MISSING_RANK
        order = np.argsort(self.ranks, axis=1, kind="stable")
        return [
            [self.generators[g] for g in row_order if row_ok[g]]
            for row_order, row_ok in zip(order, proposed, strict=True)
        ]

    def take(self, mask: np.ndarray) -> CandidateSet:
        """The candidates where `mask` holds."""
        return CandidateSet(
            self.rows[mask],
            self.items[mask],
            self.scores[mask],
            self.ranks[mask],
            self.generators,
            self.n_users,
        )


def merge(tops: Mapping[str, TopK], n_users: int, n_items: int) -> CandidateSet:
    """One candidate per (row, item) proposed by any generator, with every origin kept."""
    names = tuple(tops)
    parts = []
    for g, top in enumerate(tops.values()):
        k = top.items.shape[1]
        rows = np.repeat(np.arange(top.items.shape[0], dtype=np.int64), k)
        ranks = np.tile(np.arange(1, k + 1, dtype=np.float32), top.items.shape[0])
        items = top.items.ravel()
        ok = items >= 0
        parts.append((rows[ok], items[ok], top.scores.ravel()[ok], ranks[ok], np.full(ok.sum(), g)))
    if not parts or not sum(len(p[0]) for p in parts):
        empty = np.zeros(0, np.int64)
        shape = (0, len(names))
        return CandidateSet(
            empty, empty, np.zeros(shape, np.float32), np.zeros(shape, np.float32), names, n_users
        )
    rows, items, scores, ranks, gens = (np.concatenate(x) for x in zip(*parts, strict=True))
    keys, inverse = np.unique(rows * n_items + items, return_inverse=True)
    score_table = np.full((len(keys), len(names)), np.nan, np.float32)
    rank_table = np.full((len(keys), len(names)), MISSING_RANK, np.float32)
    score_table[inverse, gens] = scores
    rank_table[inverse, gens] = ranks
    return CandidateSet(keys // n_items, keys % n_items, score_table, rank_table, names, n_users)


# --------------------------------------------------------------------------- generators


class Generator(ABC):
    """Proposes up to `n` items per request row."""

    def __init__(
        self,
        name: str,
        n: int,
        params: Mapping[str, Any] | None = None,
        half_life_days: float | str | None = "default",
    ) -> None:
        if n < 1:
            raise ConfigError(f"generator {name!r} needs n >= 1")
        self.name = name
        self.n = n
        self.params = dict(params or {})
        self.half_life_days = half_life_days
        self.model: Recommender | None = None

    @abstractmethod
    def fit(
        self, data: InteractionMatrix, items: pd.DataFrame | None, content: ContentFeatures | None
    ) -> None:
        """Train on the stage's matrix (and the catalog's content where needed)."""

    @property
    def proposes_own_items(self) -> bool:
        """Buy-again proposes what the user already has; every other generator looks for
        something new, also when lists may repeat purchases (buy-again covers those)."""
        return self.name == "buy_again"

    def generate(self, request: CandidateRequest) -> TopK:
        """The top `n` per row beyond what the user had (see `CandidateRequest`)."""
        assert self.model is not None
        rows, had = self.rows(request), request.exclude
        if self.proposes_own_items or had is None:
            return self.model.recommend(rows, self.n)
        if not request.keep_seen:
            return self.model.recommend(rows, self.n, had)
        widest = int(np.diff(had.indptr).max(initial=0))
        top = self.model.recommend(rows, self.n + widest)
        return keep_new(top, had_mask(top.items, had), self.n)

    def rows(self, request: CandidateRequest) -> sp.csr_matrix:
        """The history rows this generator reads of a request."""
        return request.histories

    def content_model(self) -> ContentModel | None:
        """The content model, for the generator that proposes by content (new items join
        through it); None for the others."""
        return None

    def save(self, path: Path) -> None:
        assert self.model is not None
        self.model.save(path / "model")
        meta = {
            "name": self.name,
            "n": self.n,
            "params": self.params,
            "half_life_days": self.half_life_days,
        }
        (path / "generator.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def load_state(self, path: Path) -> None:
        self.model = Recommender.load(path / "model")


class ModelGenerator(Generator):
    """A registry model used as it is (ease, itemknn, trending, buy_again, or any model
    registered by its name)."""

    MODEL_OF: ClassVar[dict[str, str]] = {
        "ease": "ease",
        "itemknn": "itemknn",
        "recent": "itemknn",
        "trending": "trending",
        "buy_again": "own_history",
    }

    def fit(
        self, data: InteractionMatrix, items: pd.DataFrame | None, content: ContentFeatures | None
    ) -> None:
        name = self.MODEL_OF.get(self.name, self.name)
        self.model = create_model(name, **self.params).fit(data, items)


class RecentGenerator(ModelGenerator):
    """Item kNN from the last few items the user touched: the "because you bought" source."""

    def rows(self, request: CandidateRequest) -> sp.csr_matrix:
        return request.recent


class ALSGenerator(Generator):
    """ALS; items without interactions get factors mapped from content when it is given."""

    def fit(
        self, data: InteractionMatrix, items: pd.DataFrame | None, content: ContentFeatures | None
    ) -> None:
        params = {k: v for k, v in self.params.items() if k != "mapping_alpha"}
        model = create_model("als", **params).fit(data, items)
        if content is not None:
            vectors = content.aligned(list(data.item_ids))
            users = np.bincount(data.matrix.indices, minlength=data.n_items)
            mapping = FactorMapping(float(self.params.get("mapping_alpha", 1.0)))
            trained = model.trained  # type: ignore[attr-defined]
            try:
                mapping.fit(vectors, model.item_factors, trained, users)  # type: ignore[attr-defined]
                model = extend_factors(model, mapping, vectors)
            except DataError:
                pass  # too little content to learn a mapping: new items stay out of ALS
        self.model = model


class ContentGenerator(Generator):
    """The content model on the stage's (already encoded) content features."""

    def fit(
        self, data: InteractionMatrix, items: pd.DataFrame | None, content: ContentFeatures | None
    ) -> None:
        model = ContentModel(**self.params)
        if content is not None:
            model.use_features(content)
        self.model = model.fit(data, items)

    def content_model(self) -> ContentModel | None:
        return self.model if isinstance(self.model, ContentModel) else None


class CategoryGenerator(Generator):
    """Best sellers of the user's categories (inferred ones when the catalog has none)."""

    def fit(
        self, data: InteractionMatrix, items: pd.DataFrame | None, content: ContentFeatures | None
    ) -> None:
        if content is None:
            raise DataError("the category generator needs content features (categories)")
        table = pd.DataFrame({"item_id": content.item_ids, "category": content.category})
        table["category"] = table["category"].where(table["category"] != "", None)
        self.model = create_model("category_bestsellers", **self.params).fit(data, table)


GENERATOR_CLASSES: dict[str, type[Generator]] = {
    "als": ALSGenerator,
    "ease": ModelGenerator,
    "itemknn": ModelGenerator,
    "recent": RecentGenerator,
    "content": ContentGenerator,
    "trending": ModelGenerator,
    "category": CategoryGenerator,
    "buy_again": ModelGenerator,
}


@dataclass
class GeneratorSpec:
    """Which generator, how many candidates, with which model parameters.

    `half_life_days` is the decay of the matrix this generator is fitted on and reads
    histories from: "default" takes the pipeline's, None means no decay.
    """

    name: str
    n: int = 100
    params: dict[str, Any] = field(default_factory=dict)
    half_life_days: float | str | None = "default"

    def build(self) -> Generator:
        """The generator of this name, or a registered model proposing its top items."""
        cls = GENERATOR_CLASSES.get(self.name)
        if cls is None and model_class(self.name) is not None:
            cls = ModelGenerator
        if cls is None:
            known = ", ".join(GENERATOR_NAMES)
            raise ConfigError(
                f"unknown candidate generator {self.name!r}; known: {known}, or any model name"
            )
        return cls(self.name, self.n, self.params, self.half_life_days)


def generate(
    generators: Sequence[Generator], requests: Mapping[Any, CandidateRequest], n_items: int
) -> CandidateSet:
    """Run every generator on the request of its matrix and merge what they propose."""
    tops = {g.name: g.generate(requests[g.half_life_days]) for g in generators}
    n_users = next(iter(requests.values())).n_users
    return merge(tops, n_users, n_items)
