"""The catalogue as text: documents of each item's title, category, brand and tags, their
tokens, categories inferred from titles when the catalogue has none, and price levels within
a category."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from nextbuy.data.schema import category_levels
from nextbuy.errors import DataError

TOKEN_PATTERN = r"(?u)\b[^\W\d_][\w\-]+\b"  # words of 2+ characters that start with a letter


_NOT_A_TYPE = frozenset(
    (
        "a",
        "an",
        "and",
        "of",
        "the",
        "in",
        "with",
        "for",
        "to",
        "on",
        "set",
        "sets",
        "pack",
        "assorted",
        "design",
        "designs",
        "large",
        "small",
        "mini",
        "medium",
        "big",
        "jumbo",
        "giant",
        "tiny",
        "cm",
        "mm",
        "inch",
        "pink",
        "red",
        "blue",
        "green",
        "white",
        "black",
        "cream",
        "ivory",
        "gold",
        "silver",
        "grey",
        "gray",
        "yellow",
        "orange",
        "purple",
        "brown",
        "natural",
        "pastel",
        "bright",
        "dark",
        "light",
        "clear",
        "colour",
        "colours",
        "colored",
        "coloured",
        "multi",
        "vintage",
        "retro",
        "retrospot",
        "polkadot",
        "spotty",
        "spot",
        "spots",
        "stripe",
        "striped",
        "new",
        "doz",
        "dozen",
        "pcs",
        "piece",
        "pieces",
        "assort",
        "asstd",
        "wooden",
        "metal",
        "glass",
        "paper",
        "ceramic",
        "enamel",
        "plastic",
        "felt",
        "fabric",
        "zinc",
        "wicker",
        "heart",
        "hearts",
        "love",
        "christmas",
        "xmas",
    )
)


def infer_category(title: object) -> str:
    """The product type a title names: its last word that is not a colour, size or material."""
    if not isinstance(title, str):
        return ""
    words = re.findall(r"[A-Za-z][A-Za-z\-]+", title.lower())
    for word in reversed(words):
        word = word.strip("-")
        if len(word) < 3 or word in _NOT_A_TYPE:
            continue
        return _singular(word).upper()
    return ""


def _singular(word: str) -> str:
    if word.endswith(("ss", "us", "is")) or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def catalog_frame(items: pd.DataFrame) -> pd.DataFrame:
    """One row per item id (the last one wins) with every content column present."""
    if "item_id" not in items.columns:
        raise DataError("the items table has no item_id column")
    table = items.assign(item_id=items["item_id"].astype(str))
    table = table.drop_duplicates("item_id", keep="last").reset_index(drop=True)
    for column in ("title", "description", "category", "brand", "tags", "attributes"):
        if column not in table.columns:
            table[column] = None
    if "price" not in table.columns:
        table["price"] = np.nan
    table["price"] = pd.to_numeric(table["price"], errors="coerce")
    return table


def item_categories(table: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """The category path of each item, and whether it had to be inferred from titles."""
    given = table["category"].map(lambda c: c.strip() if isinstance(c, str) else "")
    if (given != "").any():
        return given.to_numpy(dtype=object), False
    return table["title"].map(infer_category).to_numpy(dtype=object), True


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | np.ndarray):
        return " ".join(str(v) for v in value)
    return ""


def item_documents(table: pd.DataFrame, categories: np.ndarray) -> list[str]:
    parts = zip(
        table["title"].map(_text),
        table["description"].map(_text),
        categories,
        table["brand"].map(_text),
        table["tags"].map(_text),
        strict=True,
    )
    documents = []
    for title, description, category, brand, tags in parts:
        # a description that repeats the title (Online Retail) would count the title twice
        body = "" if description.strip() == title.strip() else description
        documents.append(" ".join(p for p in (title, body, category, brand, tags) if p))
    return documents


def text_hash(document: str) -> str:
    """A short, stable key of an item's text: equal text, equal embedding."""
    return hashlib.sha1(document.strip().encode("utf-8")).hexdigest()[:16]


def price_percentile(prices: np.ndarray, categories: np.ndarray) -> np.ndarray:
    """Each price's percentile within its category (0 cheapest, 1 dearest); 0.5 when unknown."""
    frame = pd.DataFrame({"price": prices, "category": categories})
    groups = frame.groupby("category")["price"]
    rank = groups.rank(method="average").to_numpy(np.float64)
    size = groups.transform("count").to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = (rank - 1.0) / (size - 1.0)
    # a lone priced item in its category, or an unpriced one, sits in the middle
    level = np.where(size > 1, level, 0.5)
    return np.nan_to_num(level, nan=0.5).astype(np.float32)


def item_tokens(
    categories: np.ndarray, brands: Iterable[object], attributes: Iterable[object], price_bin: Any
) -> list[list[str]]:
    rows = []
    for category, brand, attrs, level in zip(
        categories, brands, attributes, price_bin, strict=True
    ):
        tokens = [f"cat={c}" for c in category_levels(category or None)]
        if isinstance(brand, str) and brand.strip():
            tokens.append(f"brand={brand.strip()}")
        if isinstance(attrs, dict):
            tokens += [
                f"attr:{k}={v}" for k, v in sorted(attrs.items()) if isinstance(v, str | bool | int)
            ]
        if level >= 0:
            tokens.append(f"price={level}")
        rows.append(tokens)
    return rows


def one_hot(tokens: list[list[str]], vocabulary: Sequence[str]) -> sp.csr_matrix:
    index = {t: i for i, t in enumerate(vocabulary)}
    rows, cols = [], []
    for r, row in enumerate(tokens):
        for token in row:
            if token in index:
                rows.append(r)
                cols.append(index[token])
    ones = np.ones(len(rows), np.float32)
    out = sp.csr_matrix((ones, (rows, cols)), shape=(len(tokens), len(vocabulary)))
    out.sum_duplicates()
    if len(vocabulary) == 0:  # a catalogue of ids only: nothing to encode (sklearn refuses it)
        return out
    return sp.csr_matrix(normalize(out))
