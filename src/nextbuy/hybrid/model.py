"""The hybrid pipeline as a registry model: `training.model = "hybrid"`.

`HybridModel` puts `nextbuy.hybrid.HybridRecommender` (candidate generators → LambdaMART →
business objective) behind the `Recommender` interface, so `nextbuy train`, its promotion
gate, the model registry and the server handle it like any other model:

```toml
[training]
model = "hybrid"
[training.params.hybrid]          # any HybridConfig field
label_windows = 2
ranker_params = { n_estimators = 200 }
```

Unlike the other models it learns from timestamped events (label windows, recency features),
not from the aggregated matrix alone, so `needs_events` makes the `Engine` call `fit_events`
with the raw events; the Engine then builds its matrix over the pipeline's item index, so a
model index here is a stage index of the pipeline (`stage_items`), and indices past it are
items the pipeline never saw. Saved as the pipeline's folder (LightGBM text, npz and Parquet)
plus the serving lists in arrays.npz; never pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.files import str_array
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import ConfigError, DataError, NotFittedError
from nextbuy.hybrid.config import HybridConfig
from nextbuy.hybrid.objective import rank_groups
from nextbuy.hybrid.online import OnlineRanker
from nextbuy.hybrid.pipeline import HybridRecommender
from nextbuy.hybrid.requests import CONTENT_SIMILARITY_WEIGHT, HybridRequests
from nextbuy.hybrid.stage import Scored
from nextbuy.models.base import Recommender, TopK, _stack

Step = Callable[[str], None]
REASON_DEPTH = 10  # precomputed reasons per user (the head of each list)
LIST_BLOCK = 1000  # users scored per block when precomputing lists
HYBRID_FOLDER = "hybrid"


class HybridModel(Recommender):
    """Candidate generators, LambdaMART and reasons, trained on timestamped events."""

    name = "hybrid"
    needs_events: ClassVar[bool] = True

    def __init__(
        self,
        protocol: str | None = None,
        half_life_days: float | None = 60.0,
        label_days: float = 30.0,
        label_windows: int = 3,
        recent_items: int = 5,
        embeddings: str = "none",
        generators: list[dict[str, Any]] | None = None,
        ranker_params: dict[str, Any] | None = None,
        max_train_users: int | None = None,
        exposure_penalty: float = 0.0,
        cold_start_generator: str | None = "trending",
        seed: int = 0,
        n_jobs: int = 1,
        weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.protocol = protocol  # None: discovery when training excludes seen items
        self.half_life_days = half_life_days
        self.label_days = label_days
        self.label_windows = label_windows
        self.recent_items = recent_items
        self.embeddings = embeddings
        self.generators = generators
        self.ranker_params = dict(ranker_params or {})
        self.max_train_users = max_train_users
        self.exposure_penalty = exposure_penalty
        self.cold_start_generator = cold_start_generator
        self.seed = seed
        self.n_jobs = n_jobs
        self.weights = weights
        self._config(exclude_seen=True, weights={})  # a bad parameter fails here, not later
        self.hybrid: HybridRecommender | None = None
        self._online: OnlineRanker | None = None
        self._requests: HybridRequests | None = None
        # serving lists of every trained user (rows: `list_users`), filled by `prepare_to_serve`
        self.list_users = np.zeros(0, object)
        self._rows_of: tuple[np.ndarray, dict[str, int]] | None = None
        self.list_items = np.zeros((0, 0), np.int32)
        self.list_scores = np.zeros((0, 0), np.float32)
        self.list_reasons = np.zeros((0, 0), object)

    def _config(self, exclude_seen: bool, weights: dict[str, float]) -> Any:
        protocol = self.protocol or ("discovery" if exclude_seen else "repeat")
        try:
            return HybridConfig(
                protocol=protocol,  # type: ignore[arg-type]
                weights=self.weights if self.weights is not None else (weights or None),
                half_life_days=self.half_life_days,
                label_days=self.label_days,
                label_windows=self.label_windows,
                recent_items=self.recent_items,
                embeddings=self.embeddings,  # type: ignore[arg-type]
                generators=self.generators,  # type: ignore[arg-type]
                ranker_params=self.ranker_params,
                max_train_users=self.max_train_users,
                exposure_penalty=self.exposure_penalty,
                cold_start_generator=self.cold_start_generator,
                seed=self.seed,
                n_jobs=self.n_jobs,
            )
        except TypeError as exc:
            raise ConfigError(f"model 'hybrid': {exc}") from None

    # -- training --------------------------------------------------------------------------------
    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        raise ConfigError(
            "the hybrid model trains on timestamped events: use Engine.fit (or fit_events), "
            "not fit on a matrix"
        )

    def fit_events(
        self,
        events: pd.DataFrame,
        items: pd.DataFrame | None,
        weights: dict[str, float],
        exclude_seen: bool = True,
        step: Step = lambda _: None,
    ) -> list[str]:
        """Train the pipeline; returns its item index, which the Engine's matrix must start
        with (then `attach` that matrix)."""
        if "timestamp" not in events or events["timestamp"].isna().all():
            raise DataError("the hybrid model needs dated interactions (a timestamp column)")
        events = events.loc[events["timestamp"].notna()]
        catalog = items if items is not None and not items.empty else _bare_items(events)
        self.hybrid = HybridRecommender(self._config(exclude_seen, weights))
        # the exposure shares cost a scoring pass and only serve a nonzero penalty
        self.hybrid.fit(events, catalog, step=step, measure_exposure=self.exposure_penalty > 0)
        self._online = None
        self._requests = None
        return [str(t) for t in self.stage_items]

    def attach(self, data: InteractionMatrix) -> None:
        """Adopt the Engine's matrix columns as the model's items (the pipeline's come first)."""
        stage = self.stage_items
        if list(data.item_ids[: len(stage)]) != list(stage):
            raise DataError("the matrix does not start with the hybrid pipeline's items")
        self.item_ids = np.asarray(data.item_ids, dtype=object).copy()

    @property
    def stage_items(self) -> np.ndarray:
        hybrid = self._hybrid()
        assert hybrid.stage is not None
        return hybrid.stage.item_ids

    def _hybrid(self) -> HybridRecommender:
        if self.hybrid is None or self.hybrid.stage is None:
            raise NotFittedError("the hybrid model is not fitted")
        return self.hybrid

    @property
    def online(self) -> OnlineRanker:
        """The per-request scorer (built on first use: it indexes every trained event)."""
        if self._online is None:
            self._online = OnlineRanker(self._hybrid())
        return self._online

    # -- whole lists for known users -------------------------------------------------------------
    @property
    def reads_request_context(self) -> bool:
        return self.hybrid is not None and self.online.reads_context

    def request_path(self) -> HybridRequests | None:
        """The pipeline ranks requests itself: its candidates, its features, its reasons."""
        if self.hybrid is None:
            return None
        if self._requests is None:
            self._requests = HybridRequests(self)
        return self._requests

    def recommend_users(self, user_ids: Sequence[str], k: int) -> TopK:
        """The pipeline's best k per user id (model indices, ordering scores)."""
        blocks = []
        for start in range(0, len(user_ids), LIST_BLOCK):
            chunk = [str(u) for u in user_ids[start : start + LIST_BLOCK]]
            scored = self._hybrid().score(chunk)
            blocks.append(self._top(scored, k)[0])
        return _stack(blocks, k)

    def _top(self, scored: Scored, k: int) -> tuple[TopK, np.ndarray]:
        order = scored.ordering(exposure_penalty=self._hybrid().config.exposure_penalty)
        picks = rank_groups(scored.candidates.rows, order, len(scored.user_ids), k)
        ok = picks >= 0
        safe = np.where(ok, picks, 0)
        items = np.where(ok, scored.candidates.items[safe], -1).astype(np.int64)
        scores = np.where(ok, order[safe], -np.inf).astype(np.float32)
        scores[ok & ~np.isfinite(scores)] = np.finfo(np.float32).min  # still listed, last
        return TopK(items, scores), picks

    def prepare_to_serve(
        self, user_ids: Sequence[str], n: int, step: Step = lambda _: None
    ) -> None:
        """Precompute every user's best n with the reasons of the first few (kept on save)."""
        users = np.asarray([str(u) for u in user_ids], dtype=object)
        items = np.full((len(users), n), -1, np.int32)
        scores = np.full((len(users), n), -np.inf, np.float32)
        reasons = np.full((len(users), min(REASON_DEPTH, n)), "", dtype=object)
        hybrid = self._hybrid()
        for start in range(0, len(users), LIST_BLOCK):
            step(f"hybrid: lists of users {start + 1:,}-{min(start + LIST_BLOCK, len(users)):,}")
            chunk = list(users[start : start + LIST_BLOCK])
            scored = hybrid.score(chunk)
            top, picks = self._top(scored, n)
            stop = start + len(chunk)
            items[start:stop], scores[start:stop] = top.items, top.scores
            head = picks[:, : reasons.shape[1]]
            rows, cols = np.nonzero(head >= 0)
            if len(rows):
                found = hybrid.explain(scored, head[rows, cols])
                reasons[start + rows, cols] = [r.text for r in found]
        self.list_users, self.list_items, self.list_scores = users, items, scores
        self.list_reasons = reasons

    def precomputed_lists(
        self, user_ids: Sequence[str], n: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(items, scores) rows for these users from the prepared lists; None if not prepared."""
        if not len(self.list_users):
            return None
        row = self._list_rows()
        at = np.fromiter((row.get(str(u), -1) for u in user_ids), np.int64, len(user_ids))
        width = min(n, self.list_items.shape[1])
        items = np.full((len(at), n), -1, np.int32)
        scores = np.full((len(at), n), -np.inf, np.float32)
        ok = at >= 0
        items[ok, :width] = self.list_items[at[ok], :width]
        scores[ok, :width] = self.list_scores[at[ok], :width]
        return items, scores

    def _list_rows(self) -> dict[str, int]:
        """User id → row of the prepared lists, built once per list (a request looks one up)."""
        users = self.list_users
        if self._rows_of is None or self._rows_of[0] is not users:
            self._rows_of = (users, {str(u): i for i, u in enumerate(users)})
        return self._rows_of[1]

    def reasons_of(self, user_id: str) -> dict[int, str]:
        """Model index → reason for the head of a user's prepared list."""
        found = self._list_rows().get(str(user_id))
        if found is None:
            return {}
        row = found
        width = self.list_reasons.shape[1]
        items = self.list_items[row, :width].tolist()
        found = zip(items, self.list_reasons[row], strict=True)
        return {i: str(r) for i, r in found if r and i >= 0}

    # -- the Recommender interface for history rows ----------------------------------------------
    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Each row as an anonymous shopper with that history: the pipeline's candidates get
        their ordering score, every other item -inf."""
        online = self.online
        n_stage = online.n_items
        out = np.full((histories.shape[0], self.n_items), -np.inf, np.float32)
        for r in range(histories.shape[0]):
            lo, hi = histories.indptr[r], histories.indptr[r + 1]
            cols, vals = histories.indices[lo:hi], histories.data[lo:hi]
            keep = cols < n_stage
            scored = online.score(None, extra_history=(cols[keep], vals[keep]))
            out[r, scored.candidates.items] = np.maximum(
                scored.order, np.finfo(np.float32).min
            ).astype(np.float32)
        return out

    def _pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """The pipeline's ordering scores of `pool` for an anonymous history, ranked online
        with the pool joining the generators' candidates."""
        online = self.online
        n_stage = online.n_items
        keep = cols < n_stage
        inside = pool < n_stage
        scored = online.score(None, extra_history=(cols[keep], vals[keep]), pool=pool[inside])
        out = np.full(len(pool), -np.inf, np.float32)
        items = scored.candidates.items
        at = np.searchsorted(items, pool[inside])
        found = (at < len(items)) & (items[np.minimum(at, len(items) - 1)] == pool[inside])
        values = np.full(int(inside.sum()), -np.inf)
        values[found] = scored.order[at[found]]
        out[inside] = values
        return out

    def _similar(self, items: np.ndarray) -> np.ndarray:
        """Item kNN similarity (what the shoppers did), scaled to 1 for each item's closest,
        plus a share of content cosine (what the items are)."""
        stage = self._hybrid().stage
        assert stage is not None
        n_stage = stage.n_items
        out = np.zeros((len(items), self.n_items), np.float32)
        inside = items < n_stage
        rows = items[inside]
        knn = _generator_model(stage, ("recent", "itemknn"))
        if knn is not None and getattr(knn, "similarity", None) is not None:
            block = knn.similarity[rows].toarray()
            top = block.max(axis=1, keepdims=True)
            out[np.flatnonzero(inside), :n_stage] += block / np.where(top > 0, top, 1.0)
        vectors = self.content_vectors()
        if vectors is not None:
            block = (vectors[rows] @ vectors.T).toarray().astype(np.float32)
            out[np.flatnonzero(inside), :n_stage] += CONTENT_SIMILARITY_WEIGHT * block
        out[:, n_stage:] = -np.inf
        out[out == 0] = -np.inf
        return out

    def content_vectors(self) -> sp.csr_matrix | None:
        """Unit content vectors of the pipeline's items (the content generator's space)."""
        stage = self._hybrid().stage
        assert stage is not None
        model = _generator_model(stage, ("content",))
        return getattr(model, "vectors", None)

    # -- persistence -----------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {
            "list_users": str_array(self.list_users),
            "list_items": self.list_items,
            "list_scores": self.list_scores,
            "list_reasons": str_array(self.list_reasons.ravel()).reshape(self.list_reasons.shape),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.list_users = state["list_users"].astype(object)
        self.list_items = state["list_items"]
        self.list_scores = state["list_scores"]
        self.list_reasons = state["list_reasons"].astype(object)

    def _save_folder(self, path: Path) -> None:
        self._hybrid().save(path / HYBRID_FOLDER)

    def _load_folder(self, path: Path) -> None:
        self.hybrid = HybridRecommender.load(path / HYBRID_FOLDER)


def _generator_model(stage: Any, names: tuple[str, ...]) -> Recommender | None:
    for name in names:
        for generator in stage.generators:
            if generator.name == name:
                return generator.model
    return None


def _bare_items(events: pd.DataFrame) -> pd.DataFrame:
    """A catalogue of ids only, for a shop that sent no items table."""
    return pd.DataFrame({"item_id": pd.unique(events["item_id"].astype(str))})
