"""The one interface every recommender implements, and the top-k logic they share.

A model scores from the history rows it is given, never from rows it kept from training, so
an event that happened after training changes the answer without retraining. Histories are
sparse rows over the model's items (the columns of the `InteractionMatrix` it was fitted on);
columns beyond them are items new since training and are ignored.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.files import atomic_savez, atomic_write_text, str_array
from nextbuy.data.matrix import InteractionMatrix
from nextbuy.errors import DataError, NextbuyError, NotFittedError, NotFoundError
from nextbuy.models.registry import model_class

if TYPE_CHECKING:
    from nextbuy.models.fbt import FrequentlyBoughtTogether
    from nextbuy.models.requests import RequestPath

FORMAT_VERSION = 1
PARAMS_FILE = "params.json"
ARRAYS_FILE = "arrays.npz"
# Users scored per block: bounds the dense block to about this many float32 scores (64 MB).
BLOCK_SCORES = 16_000_000
# Extra list places asked of a model that ranks by user, so that excluded items can be dropped.
EXCLUDED_HEADROOM = 50


class ModelFitError(NextbuyError):
    """Training failed on the data given (NaN factors, a singular system)."""


@dataclass(frozen=True)
class TopK:
    """Top-k internal item indices per row, best first; -1 (score -inf) pads short rows."""

    items: np.ndarray  # int64 (n, k)
    scores: np.ndarray  # float32 (n, k)

    def ids(self, item_ids: np.ndarray) -> list[list[str]]:
        """The item ids per row, padding dropped."""
        return [[str(item_ids[i]) for i in row if i >= 0] for row in self.items]


class Recommender(ABC):
    """Fit on an `InteractionMatrix`, then score and rank from users' history rows."""

    name: ClassVar[str]
    # True for models that learn from dated events rather than the matrix (the hybrid):
    # the Engine then calls their `fit_events` instead of `fit`.
    needs_events: ClassVar[bool] = False
    # whether `similar_to` costs little: factor models compare an item with every other one
    cheap_similar: ClassVar[bool] = True
    # a reference point every evaluation shows (random, best sellers, own history)
    baseline: ClassVar[bool] = False

    def __init__(self) -> None:
        self.item_ids: np.ndarray | None = None

    # -- what each model provides ----------------------------------------------------------------
    @abstractmethod
    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        """Learn from the training data."""

    @abstractmethod
    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Dense float32 (n, n_items) scores; -inf where the item cannot be recommended."""

    @abstractmethod
    def _similar(self, items: np.ndarray) -> np.ndarray:
        """Dense float32 (len(items), n_items) similarity of each item to every item."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """The learnt arrays, to save."""

    @abstractmethod
    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Take back what `_state` gave."""

    # -- the shared interface ------------------------------------------------------------------
    def fit(self, data: InteractionMatrix, items: pd.DataFrame | None = None) -> Self:
        """Train on `data`; `items` is the catalogue (item_id, category, ...) where needed."""
        self.item_ids = np.asarray(data.item_ids, dtype=object).copy()
        self.__dict__.pop("_request_cache", None)  # what requests prepared from the old fit
        self._fit(data, items)
        return self

    @property
    def n_items(self) -> int:
        if self.item_ids is None:
            raise NotFittedError(f"model {self.name!r} is not fitted")
        return len(self.item_ids)

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """Dense (n, n_items) float32 scores for these history rows; -inf = cannot recommend."""
        return self._score(self._conform(histories))

    def recommend(
        self, histories: sp.csr_matrix, k: int, exclude: sp.csr_matrix | None = None
    ) -> TopK:
        """The k best items per history row, never an item `exclude` has a nonzero entry for."""
        histories = self._conform(histories)
        exclude = None if exclude is None else self._conform(exclude)
        if exclude is not None and exclude.shape[0] != histories.shape[0]:
            raise DataError(
                f"exclude has {exclude.shape[0]} rows for {histories.shape[0]} histories"
            )
        blocks = []
        for start, stop in _blocks(histories.shape[0], self.n_items):
            scores = self._score(histories[start:stop])
            if exclude is not None:
                _mask(scores, exclude[start:stop])
            blocks.append(top_k(scores, k))
        return _stack(blocks, k)

    def similar_items(self, items: np.ndarray, k: int) -> TopK:
        """The k items most like each given item (internal indices), never the item itself."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise NotFoundError(f"item index out of range 0..{self.n_items - 1}")
        blocks = []
        for start, stop in _blocks(len(items), self.n_items):
            chunk = items[start:stop]
            scores = np.array(self._similar(chunk), dtype=np.float32)
            scores[np.arange(len(chunk)), chunk] = -np.inf
            blocks.append(top_k(scores, k))
        return _stack(blocks, k)

    # -- one request: a pool of candidates for one history, one item's neighbours -----------
    def pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """float32 scores of `pool` for one history (model indices with weights; an item
        listed twice counts with its summed weight); -inf where the model cannot score."""
        if not len(cols) or not len(pool):
            return np.full(len(pool), -np.inf, np.float32)
        cols, vals = summed(cols, vals)
        return self._pool_scores(cols, vals, np.asarray(pool, np.int64))

    def _pool_scores(self, cols: np.ndarray, vals: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Score the catalogue and index: families with an exact cheaper way override this."""
        scores = self.score(history_row(self.n_items, cols, vals))[0]
        return scores[pool].astype(np.float32)

    def request_top(self, row: sp.csr_matrix, n: int, blocked: np.ndarray | None) -> TopK:
        """The top n of one history row (1 × n_items), `blocked` (bool per item) left out;
        what `top_k` of the dense scores gives. Families with a shortcut override it."""
        scores = np.array(self._score(row), dtype=np.float32)
        if blocked is not None:
            scores[0, blocked] = -np.inf
        return top_k(scores, n)

    def _prepared(self, key: str, make: Callable[[], Any], made_from: object = None) -> Any:
        """What requests reuse (an order, a Gram matrix), made once per fitted state: `fit`
        clears it, and an entry made from another `made_from` object (factors a copy of the
        model replaced) is made again."""
        cache = self.__dict__.setdefault("_request_cache", {})
        found = cache.get(key)
        if found is None or found[0] is not made_from:
            found = cache[key] = (made_from, make())
        return found[1]

    def similar_to(self, item: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n items most like `item`: model indices and scores, best first."""
        top = self.similar_items(np.asarray([item]), n)
        valid = top.items[0] >= 0
        return top.items[0][valid], top.scores[0][valid]

    def item_vectors(self) -> np.ndarray | None:
        """A dense vector per item the model learnt (factors), None for models without."""
        return None

    def keep_contiguous(self, items: np.ndarray) -> None:  # noqa: B027 - a hint most ignore
        """Items most pools hold (the popular head): a model may keep their rows together,
        as gathering thousands of scattered rows costs more than the arithmetic."""

    def basket_model(self) -> FrequentlyBoughtTogether | None:
        """This model when it is a bought-together model, so serving need not fit one."""
        return None

    def request_path(self) -> RequestPath | None:
        """The model's own way of answering a request (its candidates, ranking features and
        reasons), for models that need more than `pool_scores`; None for most."""
        return None

    @property
    def reads_request_context(self) -> bool:
        """Whether the request's device and placement can change this model's ranking; then
        each request is ranked in its context instead of read from a precomputed list."""
        return False

    def contributions(
        self, hist: np.ndarray, weights: np.ndarray, targets: np.ndarray
    ) -> np.ndarray | None:
        """(len(targets), len(hist)): how much each history item (model indices, with their
        weights) adds to each target's score, behind "because you bought X" reasons; None
        when the model has no notion of item-to-item influence."""
        return None

    def params(self) -> dict[str, Any]:
        """The constructor arguments, as JSON-ready values."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def save(self, path: Path) -> None:
        """Write a folder: params.json (model name and parameters) and arrays.npz."""
        if self.item_ids is None:
            raise NotFittedError(f"model {self.name!r} is not fitted; nothing to save")
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"item_ids": str_array(self.item_ids), **self._state()}
        meta = {"format": FORMAT_VERSION, "model": self.name, "params": self.params()}
        self._save_folder(path)
        atomic_savez(path / ARRAYS_FILE, arrays)
        atomic_write_text(path / PARAMS_FILE, json.dumps(meta, indent=2))

    def _save_folder(self, path: Path) -> None:  # noqa: B027 - most models need nothing more
        """Files beyond arrays.npz (a model made of other artifacts writes them here)."""

    def _load_folder(self, path: Path) -> None:  # noqa: B027
        """Read back what `_save_folder` wrote."""

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a folder written by `save`; on `Recommender` itself, any registered model."""
        meta_path = path / PARAMS_FILE
        if not meta_path.is_file():
            raise NotFoundError(f"{path}: no saved model ({PARAMS_FILE} missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model_cls = model_class(meta.get("model", ""))
        if model_cls is None or not issubclass(model_cls, cls):
            raise DataError(f"{meta_path}: holds model {meta.get('model')!r}, not a {cls.__name__}")
        model = model_cls(**meta["params"])
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
            state = {key: npz[key] for key in npz.files}
        model.item_ids = state.pop("item_ids").astype(object)
        model._restore(state)
        model._load_folder(path)
        return model  # type: ignore[return-value]

    # -- helpers ---------------------------------------------------------------------------------
    def _conform(self, rows: sp.spmatrix) -> sp.csr_matrix:
        """Rows as float32 CSR over exactly the model's items."""
        rows = sp.csr_matrix(rows, dtype=np.float32)
        n = self.n_items
        if rows.shape[1] > n:
            rows = rows[:, :n]
        elif rows.shape[1] < n:
            rows = sp.csr_matrix((rows.data, rows.indices, rows.indptr), shape=(rows.shape[0], n))
        return rows


def summed(cols: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeated items (trained row + new events) as one entry with the summed weight."""
    if len(cols) < 2:
        return cols.astype(np.int64), vals.astype(np.float64)
    unique, inverse = np.unique(cols, return_inverse=True)
    return unique.astype(np.int64), np.bincount(inverse, weights=vals).astype(np.float64)


def history_row(n_items: int, cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
    """A 1 × n_items CSR row; repeated columns are summed."""
    row = sp.csr_matrix(
        (vals.astype(np.float32), (np.zeros(len(cols), np.int64), cols.astype(np.int64))),
        shape=(1, n_items),
    )
    row.sum_duplicates()
    return row


def best_of(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the n highest finite scores of a vector, best first."""
    n = min(n, len(scores))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    picked = scores[part]
    order = np.lexsort((part, -picked))
    items, best = part[order].astype(np.int64), picked[order].astype(np.float32)
    finite = np.isfinite(best)
    return items[finite], best[finite]


def sparse_pool_scores(
    matrix: sp.csr_matrix, weights: np.ndarray, cols: np.ndarray, pool: np.ndarray
) -> np.ndarray:
    """weights · matrix[cols] at `pool`: the history items' sparse rows only; -inf where no
    history item reaches a pool item."""
    row = sp.csr_matrix(weights[None, :]) @ matrix[cols]
    dense = np.asarray(row[:, pool].todense(), np.float32).ravel()
    hit = np.zeros(len(pool), bool)
    hit[np.isin(pool, row.indices)] = True
    return np.where(hit, dense, -np.inf).astype(np.float32)


def top_k(scores: np.ndarray, k: int) -> TopK:
    """The k highest finite scores per row, best first; ties go to the lower index."""
    n, m = scores.shape
    k = max(int(k), 0)
    width = min(k, m)
    if width == 0:
        return TopK(np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32))
    if width < m:
        part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    picked = np.take_along_axis(scores, part, axis=1)
    # lexsort: by score descending, then by index so equal scores give a stable order
    order = np.lexsort((part, -picked), axis=1)
    items = np.take_along_axis(part, order, axis=1).astype(np.int64)
    best = np.take_along_axis(picked, order, axis=1).astype(np.float32)
    items[~np.isfinite(best)] = -1
    best[items < 0] = -np.inf
    if width < k:
        items = np.pad(items, ((0, 0), (0, k - width)), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, k - width)), constant_values=-np.inf)
    return TopK(items, best)


def _mask(scores: np.ndarray, exclude: sp.csr_matrix) -> None:
    exclude = exclude.copy()
    exclude.eliminate_zeros()
    rows, cols = exclude.nonzero()
    scores[rows, cols] = -np.inf


def _blocks(n_rows: int, n_items: int) -> list[tuple[int, int]]:
    size = max(1, BLOCK_SCORES // max(n_items, 1))
    return [(s, min(s + size, n_rows)) for s in range(0, n_rows, size)]


def _stack(blocks: list[TopK], k: int) -> TopK:
    if not blocks:
        return TopK(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32))
    return TopK(
        np.concatenate([b.items for b in blocks]), np.concatenate([b.scores for b in blocks])
    )


def mask_empty(scores: np.ndarray, histories: sp.csr_matrix) -> np.ndarray:
    """-inf for rows with no history: a personal model has nothing to go on there."""
    scores[np.diff(histories.indptr) == 0] = -np.inf
    return scores


def sparse_scores(product: sp.spmatrix) -> np.ndarray:
    """A sparse score product as dense float32, -inf where nothing contributed."""
    product = sp.csr_matrix(product)
    out = np.full(product.shape, -np.inf, np.float32)
    rows = np.repeat(np.arange(product.shape[0]), np.diff(product.indptr))
    out[rows, product.indices] = product.data
    return out


def entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(position in `rows`, column, value) of every stored entry of these CSR rows, in
    storage order."""
    starts, stops = matrix.indptr[rows], matrix.indptr[rows + 1]
    lengths = (stops - starts).astype(np.int64)
    at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    return np.repeat(np.arange(len(rows)), lengths), matrix.indices[at], matrix.data[at]


def accumulate(
    width: int, columns: np.ndarray, weights: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """A float32 row: Σ weight × value per column, added in the order given. That is the
    order and the arithmetic of scipy's CSR product of a history row with a CSR matrix
    (float32 products and sums), so the values equal the batch path's to the bit, without
    building three sparse matrices for one row."""
    out = np.zeros(width, np.float32)
    products = np.asarray(weights, np.float32) * np.asarray(values, np.float32)
    np.add.at(out, columns, products)
    return out


def without_excluded(top: TopK, exclude: sp.csr_matrix, k: int) -> TopK:
    """The first k places of each row whose item `exclude` does not hold, with their scores,
    padded (for lists made without the exclusion, e.g. by user id)."""
    items = top.items
    rows = np.repeat(np.arange(items.shape[0]), items.shape[1])
    cols = np.minimum(np.maximum(items.ravel(), 0), exclude.shape[1] - 1)
    inside = items.ravel() < exclude.shape[1]
    banned = (np.asarray(exclude[rows, cols]).ravel() != 0) & inside
    kept = ~(banned | (items.ravel() < 0)).reshape(items.shape)
    # kept places first, in list order; the first k of them
    order = np.argsort(~kept, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(kept, order, axis=1)
    out_items = np.where(picked, np.take_along_axis(items, order, axis=1), -1)
    out_scores = np.where(picked, np.take_along_axis(top.scores, order, axis=1), -np.inf)
    if out_items.shape[1] < k:
        pad = k - out_items.shape[1]
        out_items = np.pad(out_items, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return TopK(out_items.astype(np.int64), out_scores.astype(np.float32))
