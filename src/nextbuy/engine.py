"""The engine: train a model on a shop's interactions, then recommend from Python.

```python
import nextbuy
engine = nextbuy.Engine.from_config()          # nextbuy.toml, or defaults
engine.fit(interactions_df, items_df)
engine.recommend("17850", k=10)                # DataFrame: item_id, score, title
engine.similar("85123A", k=5)
```
The CLI and the API use the same object, so a notebook sees what the storefront sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.choice import Choice, choose
from nextbuy.config import AUTO_MODEL, Settings, load_settings
from nextbuy.data.matrix import Batch, InteractionMatrix, RatingValues, build_matrix
from nextbuy.errors import ConfigError, NotFittedError, NotFoundError
from nextbuy.models import Recommender, TopK, create_model
from nextbuy.models.base import EXCLUDED_HEADROOM, without_excluded

ENGINE_FILE = "engine.json"
Step = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _as_frame(batch: Batch) -> pd.DataFrame:
    return batch if isinstance(batch, pd.DataFrame) else batch.to_pandas()  # type: ignore[union-attr]


TUNED_FILE = "tuned_params.json"


def tuned_params(settings: Settings) -> dict[str, dict[str, Any]]:
    """Hyper-parameters `nextbuy tune` found, per model name."""
    path = settings.data_dir / TUNED_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def model_params(settings: Settings, model: str) -> dict[str, Any]:
    """Tuned parameters, overridden by any set explicitly in nextbuy.toml."""
    return {**tuned_params(settings).get(model, {}), **settings.training.params.get(model, {})}


def rating_values(settings: Settings) -> RatingValues:
    """How ratings weigh in this engine's matrix ("auto" before a choice: as today, alike)."""
    mode = settings.events.rating_values
    scale = settings.events.rating_scale or (1.0, 5.0)
    return RatingValues("ignore" if mode == "auto" else mode, *scale)


class Engine:
    """One trained model with the interaction matrix it was trained on and the catalogue.

    `model="auto"` (the default unless the configuration names one) chooses on `fit`: the
    latest window of the events is held out, the model families are searched on it within
    `budget` (see `nextbuy.choice`), and the winner is trained on everything; `choice` then
    holds the leaderboard.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        budget: str | float | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.model_name = model or self.settings.training.model
        self.params = params if params is not None else model_params(self.settings, self.model_name)
        self.budget = budget
        self.model: Recommender | None = None
        self.data: InteractionMatrix | None = None
        self.items: pd.DataFrame | None = None
        self.choice: Choice | None = None

    @classmethod
    def from_config(cls, path: Path | None = None, **overrides: Any) -> Engine:
        model = overrides.pop("model", None)
        params = overrides.pop("params", None)
        return cls(load_settings(path, **overrides), model, params)

    # -- training ---------------------------------------------------------------------------
    def fit(
        self, interactions: pd.DataFrame, items: pd.DataFrame | None = None, step: Step = _quiet
    ) -> Self:
        """Train on a DataFrame of interactions (user_id, item_id, event_type, timestamp...)."""
        return self.fit_batches([interactions], items, step)

    def fit_batches(
        self, batches: Iterable[Batch], items: pd.DataFrame | None = None, step: Step = _quiet
    ) -> Self:
        if self.model_name == AUTO_MODEL:
            return self._choose_and_fit(batches, items, step)
        weights = self.settings.events.all_weights()
        model = create_model(self.model_name, **self.params)
        if getattr(model, "needs_events", False):
            return self._fit_events(model, batches, items, step)
        data = build_matrix(
            batches,
            weights,
            self.settings.training.half_life_days,
            ratings=rating_values(self.settings),
        )
        return self.fit_matrix(data, items)

    def _choose_and_fit(
        self, batches: Iterable[Batch], items: pd.DataFrame | None, step: Step
    ) -> Self:
        events = pd.concat([_as_frame(b) for b in batches], ignore_index=True)
        items = None if items is None or items.empty else items
        choice = choose(events, items, self.settings, budget=self.budget, step=step)
        winner = choice.winner.candidate
        self.settings = choice.settings_for(self.settings)
        self.model_name, self.params = winner.model, dict(winner.params)
        self.fit_batches([events], items, step)
        self.choice = choice
        return self

    def _fit_events(
        self, model: Any, batches: Iterable[Batch], items: pd.DataFrame | None, step: Step
    ) -> Self:
        # The hybrid learns from dated events (label windows, recency features), which the
        # aggregated matrix has lost: it gets the events, and the matrix its item order.
        events = pd.concat([_as_frame(b) for b in batches], ignore_index=True)
        weights = self.settings.events.all_weights()
        exclude_seen = self.settings.training.exclude_seen
        items = None if items is None or items.empty else items
        stage_items = model.fit_events(events, items, weights, exclude_seen is not False, step)
        data = build_matrix(
            [events],
            weights,
            self.settings.training.half_life_days,
            item_ids=stage_items,
            ratings=rating_values(self.settings),
        )
        model.attach(data)
        self.model, self.data, self.items = model, data, items
        return self

    def fit_matrix(self, data: InteractionMatrix, items: pd.DataFrame | None = None) -> Self:
        if self.model_name == AUTO_MODEL:
            raise ConfigError("the automatic choice needs the events: use fit(), not fit_matrix()")
        model = create_model(self.model_name, **self.params)
        self.model = model.fit(data, None if items is None or items.empty else items)
        self.data = data
        self.items = items
        return self

    # -- recommending -----------------------------------------------------------------------
    def _ready(self) -> tuple[Recommender, InteractionMatrix]:
        if self.model is None or self.data is None:
            raise NotFittedError("the engine is not trained: call fit() or Engine.load()")
        return self.model, self.data

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """The k items this user is most likely to want next; unknown users get popular items."""
        table = self.recommend_users([user_id], k, exclude_seen)
        return table.drop(columns=["user_id", "rank"]).reset_index(drop=True)

    def recommend_users(
        self, user_ids: Sequence[str] | None = None, k: int = 10, exclude_seen: bool = True
    ) -> pd.DataFrame:
        """Top-k for many users (all trained users when None): user_id, rank, item_id, score."""
        _, data = self._ready()
        users = list(data.user_ids) if user_ids is None else [str(u) for u in user_ids]
        top = self.top_k(users, k, exclude_seen)
        histories = data.rows(users)
        table = self._table(users, top, data.item_ids)
        return self._fill_cold(table, users, histories, k, exclude_seen)

    def top_k(self, user_ids: Sequence[str], k: int, exclude_seen: bool = True) -> TopK:
        """The model's k best per user (matrix item indices), from their trained histories."""
        model, data = self._ready()
        histories = data.rows(list(user_ids))
        if getattr(model, "needs_events", False):
            # the hybrid ranks by user (their events), not by a history row; a version that
            # may repeat purchases has them dropped here when lists must not
            wide = k + (EXCLUDED_HEADROOM if exclude_seen else 0)
            top = model.recommend_users(list(user_ids), wide)  # type: ignore[attr-defined]
            return without_excluded(top, histories, k) if exclude_seen else top
        return model.recommend(histories, k, exclude=histories if exclude_seen else None)

    def recommend_history(
        self, history: dict[str, float], k: int = 10, exclude: Iterable[str] = ()
    ) -> pd.DataFrame:
        """Top-k for an ad-hoc history (item_id -> weight), e.g. an anonymous session."""
        model, data = self._ready()
        row = data.history_vector(history)
        excluded = data.history_vector(dict.fromkeys((*history, *exclude), 1.0))
        top = model.recommend(row, k, exclude=excluded)
        return self._table(["_"], top, data.item_ids).drop(columns=["user_id", "rank"])

    def similar(self, item_id: str, k: int = 10) -> pd.DataFrame:
        model, data = self._ready()
        index = data.item_index.get(str(item_id))
        if index is None:
            raise NotFoundError(f"item {item_id!r} is not in the trained catalogue")
        top = model.similar_items(np.array([index]), k)
        return self._table(["_"], top, data.item_ids).drop(columns=["user_id", "rank"])

    def _table(self, users: Sequence[str], top: TopK, item_ids: np.ndarray) -> pd.DataFrame:
        k = top.items.shape[1]
        valid = top.items >= 0
        frame = pd.DataFrame(
            {
                "user_id": np.repeat(np.asarray(users, dtype=object), k)[valid.ravel()],
                "rank": np.tile(np.arange(1, k + 1), len(users))[valid.ravel()],
                "item_id": item_ids[top.items[valid]],
                "score": top.scores[valid].astype(float),
            }
        )
        return self._with_titles(frame)

    def _fill_cold(
        self,
        table: pd.DataFrame,
        users: list[str],
        histories: sp.csr_matrix,
        k: int,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Short lists are topped up with the most popular items (never an empty list), and
        with none of the user's own when lists leave those out."""
        empty = {u for u, n in zip(users, np.diff(histories.indptr), strict=True) if n == 0}
        short = set(table.groupby("user_id").size().loc[lambda s: s < k].index) | (
            set(users) - set(table["user_id"])
        )
        cold = [i for i, u in enumerate(users) if u in short or u in empty]
        if not cold:
            return table
        _, data = self._ready()
        widest = int(np.diff(histories.indptr).max(initial=0)) if exclude_seen else 0
        popular = np.argsort(-np.asarray(data.counts.sum(axis=0)).ravel(), kind="stable")
        popular = popular[: k + widest]
        picks = [popular[:k]] * len(cold)
        if exclude_seen:
            picks = [self._unhad(popular, histories, row, k) for row in cold]
        fallback = pd.DataFrame(
            {
                "user_id": np.repeat(
                    np.asarray(users, dtype=object)[cold], [len(p) for p in picks]
                ),
                "item_id": data.item_ids[np.concatenate(picks)] if picks else [],
                "score": 0.0,
            }
        ).pipe(self._with_titles)
        merged = pd.concat([table, fallback], ignore_index=True)
        merged = merged.drop_duplicates(["user_id", "item_id"])
        merged = merged.groupby("user_id", sort=False).head(k)
        merged["rank"] = merged.groupby("user_id", sort=False).cumcount() + 1
        order = {u: i for i, u in enumerate(users)}
        return merged.sort_values(
            ["user_id", "rank"], key=lambda s: s.map(order) if s.name == "user_id" else s
        ).reset_index(drop=True)

    @staticmethod
    def _unhad(popular: np.ndarray, histories: sp.csr_matrix, row: int, k: int) -> np.ndarray:
        had = histories.indices[histories.indptr[row] : histories.indptr[row + 1]]
        return popular[~np.isin(popular, had)][:k]

    def _with_titles(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.items is None or "title" not in self.items:
            return frame
        titles = self.items.drop_duplicates("item_id").set_index("item_id")["title"]
        return frame.assign(title=frame["item_id"].map(titles))

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        model, data = self._ready()
        path.mkdir(parents=True, exist_ok=True)
        model.save(path / "model")
        data.save(path / "matrix")
        if self.items is not None:
            _items_for_disk(self.items).to_parquet(path / "items.parquet", index=False)
        meta = {"model": self.model_name, "params": model.params()}
        (path / ENGINE_FILE).write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, path: Path, settings: Settings | None = None) -> Engine:
        meta_path = path / ENGINE_FILE
        if not meta_path.is_file():
            raise NotFoundError(f"{path}: no saved engine ({ENGINE_FILE} missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        engine = cls(settings, meta["model"], meta["params"])
        engine.model = Recommender.load(path / "model")
        engine.data = InteractionMatrix.load(path / "matrix")
        items_path = path / "items.parquet"
        engine.items = pd.read_parquet(items_path) if items_path.is_file() else None
        return engine


def _items_for_disk(items: pd.DataFrame) -> pd.DataFrame:
    """Nested columns (tags, attributes) as JSON text so any Parquet reader can open the file."""
    out = items.copy()
    for column in ("tags", "attributes"):
        if column in out:
            out[column] = out[column].map(lambda v: None if v is None else json.dumps(v))
    return out
