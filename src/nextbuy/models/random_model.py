"""Random recommendations: a baseline that every real model must beat, never to serve."""

from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.matrix import InteractionMatrix
from nextbuy.models.base import Recommender


class RandomModel(Recommender):
    """Uniformly random items among those seen in training.

    Each row's scores come from a generator seeded by `seed` and the row's history, so the
    same history always gets the same list (and a saved model answers like the original).
    """

    name = "random"
    baseline: ClassVar[bool] = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.trained = np.zeros(0, bool)

    def _fit(self, data: InteractionMatrix, items: pd.DataFrame | None) -> None:
        self.trained = np.bincount(data.counts.indices, minlength=data.n_items) > 0

    def _draw(self, keys: list[bytes]) -> np.ndarray:
        scores = np.empty((len(keys), self.n_items), np.float32)
        for row, key in enumerate(keys):
            rng = np.random.default_rng([self.seed, zlib.crc32(key)])
            scores[row] = rng.random(self.n_items, dtype=np.float32)
        scores[:, ~self.trained] = -np.inf
        return scores

    def _score(self, histories: sp.csr_matrix) -> np.ndarray:
        keys = [
            histories.indices[histories.indptr[r] : histories.indptr[r + 1]].tobytes()
            for r in range(histories.shape[0])
        ]
        return self._draw(keys)

    def _similar(self, items: np.ndarray) -> np.ndarray:
        return self._draw([b"item:" + int(i).to_bytes(8, "little") for i in items])

    def _state(self) -> dict[str, np.ndarray]:
        return {"trained": self.trained}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self.trained = state["trained"]
