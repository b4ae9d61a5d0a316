"""The item catalogue as column arrays aligned to item indices, for request-time rules.

Rules look items up by index millions of times a second, so every attribute is a numpy
column: `catalog.price[candidates]` is one gather, not a loop. The model's item order comes
first so that model indices are catalogue indices; catalogue items the model has never seen
follow. A catalogue is never changed in place: `upsert` and `remove` return a new one, so a
request that holds the old one (another thread) never sees half an update.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from nextbuy.data.schema import category_levels
from nextbuy.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd

DAY_MS = 86_400_000.0

# Fields an expression or a rule may read; `field()` serves them as full-length columns.
NUMBER_FIELDS = ("price", "margin", "stock", "age_days", "created_at")
TEXT_FIELDS = ("item_id", "title", "category", "top_category", "brand")
BOOL_FIELDS = ("available",)
LIST_FIELDS = ("tags",)
FIELDS = NUMBER_FIELDS + TEXT_FIELDS + BOOL_FIELDS + LIST_FIELDS

ValueTest = Callable[[Any], bool]
_CODED = ("category", "top_category", "brand")  # text fields with int codes and a vocabulary


@dataclass(repr=False)
class ItemCatalog:
    """Column arrays aligned to item index; `index` maps an item id to its index."""

    item_ids: np.ndarray  # object (str)
    index: dict[str, int]
    title: np.ndarray  # object, None when unknown
    category: np.ndarray  # object: normalised path "Shoes > Running", or None
    top_category: np.ndarray  # object: first level "Shoes", or None
    brand: np.ndarray  # object, or None
    price: np.ndarray  # float64, NaN unknown
    margin: np.ndarray  # float64 share of price, NaN unknown
    available: np.ndarray  # bool: listed by the shop and not out of stock
    created_at_ms: np.ndarray  # float64 UTC ms, NaN unknown
    category_code: np.ndarray  # int32 code into category_vocab, -1 for None
    top_category_code: np.ndarray  # int32 code into top_category_vocab, -1 for None
    brand_code: np.ndarray  # int32 code into brand_vocab, -1 for None
    category_vocab: np.ndarray  # object: distinct categories, in code order
    top_category_vocab: np.ndarray
    brand_vocab: np.ndarray
    stock: np.ndarray  # float64, NaN unknown
    listed: np.ndarray  # bool: the shop's own `available` flag (stock aside)
    tags: np.ndarray  # object: tuple of tags per item
    # Full-length masks of per-value tests (text predicates), built once per catalogue,
    # and the indices of id lists (promoted items): request-time lookups become gathers.
    _masks: dict[Hashable, tuple[ValueTest, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _id_lists: dict[tuple[str, ...], np.ndarray] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.item_ids)

    def __repr__(self) -> str:
        return f"ItemCatalog({len(self)} items, {int(self.available.sum())} available)"

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_frame(cls, items: pd.DataFrame | None, item_ids: Sequence[str]) -> ItemCatalog:
        """Catalogue over the model's `item_ids` (in that order), then items only `items` has.

        `items` has columns from schema.ITEM_COLUMNS (store.items() output); any may be
        missing. Model items absent from `items` are kept with unknown attributes, available.
        """
        model_ids = [str(i) for i in item_ids]
        rows = _dedupe(items)
        known = set(model_ids)
        extra = [] if rows is None else [i for i in rows["item_id"] if i not in known]
        ids = model_ids + extra
        cols = _columns(rows, ids)
        codes = {}
        for name in _CODED:
            codes[f"{name}_code"], codes[f"{name}_vocab"] = _encode(cols[name])
        return cls(
            item_ids=np.array(ids, dtype=object),
            index={item: i for i, item in enumerate(ids)},
            **cols,
            **codes,
        )

    def upsert(self, items: pd.DataFrame) -> ItemCatalog:
        """A new catalogue with `items` added or updated; new items get indices at the end.

        Only the columns `items` has are updated for known items, as the store does.
        """
        rows = _dedupe(items)
        if rows is None or rows.empty:
            return self
        ids = [str(i) for i in rows["item_id"]]
        new_ids = [i for i in ids if i not in self.index]
        index = self.index
        if new_ids:
            index = dict(self.index)
            for item in new_ids:
                index[item] = len(index)
        n = len(index)
        where = np.fromiter((index[i] for i in ids), dtype=np.int64, count=len(ids))
        fresh = _columns(rows, ids)
        present = set(rows.columns)
        grown = {
            name: _grow(getattr(self, name), n, default)
            for name, default in _COLUMN_DEFAULTS.items()
        }
        for name in _COLUMN_DEFAULTS:
            # Brand-new items take every column from the frame (defaults where it has none).
            source = _SOURCE_COLUMN.get(name, name)
            update = np.ones(len(ids), bool) if source in present else where >= len(self)
            grown[name][where[update]] = fresh[name][update]
        grown["available"] = _effective_available(grown["listed"], grown["stock"])
        codes = {}
        for name in _CODED:
            codes[f"{name}_code"], codes[f"{name}_vocab"] = _extend_codes(
                getattr(self, f"{name}_code"),
                getattr(self, f"{name}_vocab"),
                grown[name],
                where,
                n,
            )
        catalog = replace(
            self,
            item_ids=np.concatenate([self.item_ids, np.array(new_ids, dtype=object)]),
            index=index,
            _masks={},
            _id_lists={},
            **grown,
            **codes,
        )
        catalog._carry_masks(self._masks, np.unique(where))
        return catalog

    def remove(self, item_id: str) -> ItemCatalog:
        """A new catalogue where `item_id` is unavailable; indices stay as they were."""
        i = self.index.get(item_id)
        if i is None:
            raise NotFoundError(f"item {item_id!r} is not in the catalogue")
        listed = self.listed.copy()
        listed[i] = False
        available = self.available.copy()
        available[i] = False
        # Text and tags did not change, so the masks still hold; id lists may now differ.
        return replace(
            self, listed=listed, available=available, _masks=dict(self._masks), _id_lists={}
        )

    # -- reading ----------------------------------------------------------------------------
    def field(self, name: str, now_ms: float | None = None) -> np.ndarray:
        """The full column `name` (see FIELDS); `age_days` is measured at `now_ms` (or now)."""
        if name == "age_days":
            now = time.time() * 1000.0 if now_ms is None else now_ms
            return (now - self.created_at_ms) / DAY_MS
        if name == "created_at":
            return self.created_at_ms
        if name == "item_id":
            return self.item_ids
        if name not in FIELDS:
            raise KeyError(f"unknown item field {name!r}; known: {', '.join(FIELDS)}")
        return getattr(self, name)

    def value_mask(self, name: str, key: Hashable, test: ValueTest) -> np.ndarray:
        """Full-length mask of items whose text or tags field `name` passes `test`.

        Built once per catalogue and `key` (the caller's description of `test`), then a
        request only gathers from it. None values never pass.
        """
        cached = self._masks.get((name, key))
        if cached is None:
            cached = (test, self._evaluate(name, test))
            self._masks[(name, key)] = cached
        return cached[1]

    def indices_of(self, item_ids: tuple[str, ...]) -> np.ndarray:
        """Indices of the ids this catalogue knows, in the given order, each once."""
        cached = self._id_lists.get(item_ids)
        if cached is None:
            found = [self.index[i] for i in dict.fromkeys(item_ids) if i in self.index]
            cached = self._id_lists[item_ids] = np.array(found, dtype=np.int64)
        return cached

    def _evaluate(self, name: str, test: ValueTest) -> np.ndarray:
        if name in _CODED:
            # Few distinct values: test each once, then spread over items by code.
            words = getattr(self, f"{name}_vocab")
            lut = np.zeros(len(words) + 1, dtype=bool)  # last slot answers code -1
            lut[: len(words)] = [bool(test(w)) for w in words]
            return lut[getattr(self, f"{name}_code")]
        values = self.field(name)
        return np.fromiter(
            (v is not None and bool(test(v)) for v in values), dtype=bool, count=len(values)
        )

    def _carry_masks(
        self, old: dict[Hashable, tuple[ValueTest, np.ndarray]], rows: np.ndarray
    ) -> None:
        """Reuse the old catalogue's masks, re-testing only the rows that changed."""
        n = len(self)
        for key, (test, mask) in old.items():
            name = key[0]
            grown = np.zeros(n, dtype=bool)
            grown[: len(mask)] = mask
            values = self.field(name)[rows]
            grown[rows] = [v is not None and bool(test(v)) for v in values]
            self._masks[key] = (test, grown)


# Catalogue columns built from the item frame, with the value an unknown item gets.
_COLUMN_DEFAULTS: dict[str, Any] = {
    "title": None,
    "category": None,
    "top_category": None,
    "brand": None,
    "price": math.nan,
    "margin": math.nan,
    "created_at_ms": math.nan,
    "stock": math.nan,
    "listed": True,
    "available": True,
    "tags": (),
}
# Catalogue column -> the item-frame column it comes from.
_SOURCE_COLUMN = {
    "top_category": "category",
    "created_at_ms": "created_at",
    "listed": "available",
    "available": "available",
}


def _dedupe(items: pd.DataFrame | None) -> pd.DataFrame | None:
    """The frame with string ids and the last row of each id (a later row is newer)."""
    if items is None:
        return None
    if "item_id" not in items.columns:
        raise ValueError("items frame needs an item_id column")
    rows = items[items["item_id"].notna()].copy()
    rows["item_id"] = rows["item_id"].astype(str)
    return rows.drop_duplicates("item_id", keep="last").reset_index(drop=True)


def _columns(rows: pd.DataFrame | None, ids: list[str]) -> dict[str, np.ndarray]:
    """Catalogue columns for `ids`, read from `rows` (an item frame) where it has them."""
    import pandas as pd  # imported here: the rest of the request path needs no pandas

    n = len(ids)
    frame = (
        pd.DataFrame(index=pd.Index(ids))
        if rows is None
        else rows.set_index("item_id").reindex(ids)
    )

    def text(name: str) -> np.ndarray:
        return _text_column(frame[name]) if name in frame else _fill(n, None)

    def number(name: str) -> np.ndarray:
        if name not in frame:
            return np.full(n, math.nan)
        return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=math.nan)

    category, top = _category_columns(frame.get("category"), n)
    stock = number("stock")
    listed = (
        frame["available"].map(_truthy).to_numpy(dtype=bool)
        if "available" in frame
        else np.ones(n, bool)
    )
    return {
        "title": text("title"),
        "category": category,
        "top_category": top,
        "brand": text("brand"),
        "price": number("price"),
        "margin": number("margin"),
        "created_at_ms": (
            _time_ms(frame["created_at"]) if "created_at" in frame else np.full(n, math.nan)
        ),
        "stock": stock,
        "listed": listed,
        "available": _effective_available(listed, stock),
        "tags": _tags_column(frame["tags"]) if "tags" in frame else _fill(n, ()),
    }


def _effective_available(listed: np.ndarray, stock: np.ndarray) -> np.ndarray:
    # A known stock of zero or less means the shop cannot sell it, whatever the flag says.
    with np.errstate(invalid="ignore"):
        return listed & ~(stock <= 0)


def _truthy(value: Any) -> bool:
    """The shop's available flag; missing means available, as the store defaults it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "n", "f", "")
    return bool(value)


def _fill(n: int, value: Any) -> np.ndarray:
    return _objects([value] * n)


def _objects(values: list[Any]) -> np.ndarray:
    # fromiter keeps each tuple whole; assigning a list could broadcast equal-length tuples.
    return np.fromiter(values, dtype=object, count=len(values))


def _clean_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _text_column(series: pd.Series) -> np.ndarray:
    # Normalise each distinct value once: catalogues repeat brands and categories a lot.
    codes, uniques = _factorize(series)
    clean = np.array([_clean_text(u) for u in uniques] + [None], dtype=object)
    return clean[codes]


def _factorize(series: pd.Series) -> tuple[np.ndarray, list[Any]]:
    import pandas as pd

    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, list(uniques)


def _category_columns(series: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised paths ("Shoes>Running " -> "Shoes > Running") and their first level."""
    if series is None:
        return _fill(n, None), _fill(n, None)
    codes, uniques = _factorize(series)
    levels = [category_levels(u) if isinstance(u, str) else [] for u in uniques]
    full = np.array([lv[-1] if lv else None for lv in levels] + [None], dtype=object)
    top = np.array([lv[0] if lv else None for lv in levels] + [None], dtype=object)
    return full[codes], top[codes]


def _tags_column(series: pd.Series) -> np.ndarray:
    def as_tuple(value: Any) -> tuple[str, ...]:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ()
        if isinstance(value, str):
            return tuple(t.strip() for t in value.split(",") if t.strip())
        return tuple(str(t) for t in value)

    return _objects([as_tuple(v) for v in series])


def _time_ms(series: pd.Series) -> np.ndarray:
    """UTC milliseconds from store integers (ms), datetimes, or ISO 8601 text."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series):
        stamps = series.dt.tz_convert("UTC").dt.tz_localize(None) if series.dt.tz else series
        ms = stamps.to_numpy(dtype="datetime64[ms]").astype("int64").astype(float)  # a copy
        ms[stamps.isna().to_numpy()] = math.nan
        return ms
    ms = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=math.nan)
    ms = ms.copy() if not ms.flags.writeable else ms
    unread = np.isnan(ms) & series.notna().to_numpy()
    if unread.any():  # datetime objects or text; what still fails stays unknown
        stamps = pd.to_datetime(series[unread], utc=True, errors="coerce", format="mixed")
        ms[unread] = _time_ms(stamps)
    return ms


def _encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes (-1 for None) and the vocabulary they index."""
    codes, uniques = _factorize(values)
    return codes.astype(np.int32), np.array(uniques, dtype=object)


def _extend_codes(
    codes: np.ndarray, vocab: np.ndarray, values: np.ndarray, rows: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Codes for `values` after `rows` changed: known words keep codes, new ones append."""
    lookup = {w: i for i, w in enumerate(vocab)}
    words = list(vocab)
    out = _grow(codes, n, -1)
    for row in rows:
        value = values[row]
        if value is None:
            out[row] = -1
            continue
        code = lookup.get(value)
        if code is None:
            code = lookup[value] = len(words)
            words.append(value)
        out[row] = code
    return out, np.array(words, dtype=object)


def _grow(column: np.ndarray, n: int, default: Any) -> np.ndarray:
    """A copy of `column` lengthened to `n` with `default`."""
    out = np.empty(n, dtype=column.dtype)
    out[: len(column)] = column
    if n > len(column):
        tail = n - len(column)
        out[len(column) :] = _fill(tail, default) if column.dtype == object else default
    return out
