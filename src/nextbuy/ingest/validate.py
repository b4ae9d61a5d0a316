"""Turn a batch of text rows into typed records plus one reason for every rejected row.

All checks are vectorised over the batch: a per-row Python loop would not reach the import
throughput a shop's history of tens of millions of events needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nextbuy.data.schema import (
    INTERACTION_COLUMNS,
    INTERACTION_NUMBER_COLUMNS,
    ITEM_COLUMNS,
    ITEM_NUMBER_COLUMNS,
    USER_COLUMNS,
)

MAX_ID_LENGTH = 256
# Numbers above this are unix milliseconds rather than seconds (1e11 s is the year 5138).
MS_THRESHOLD = 1e11
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "in stock", "available"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "out of stock", "unavailable"})


@dataclass
class Checked:
    """Valid rows, typed for the store, and the rejected rows with a reason each."""

    valid: pd.DataFrame
    rejected: pd.DataFrame  # columns: line, reason, then the raw fields


class Reasons:
    """The first failing check of each row; later checks do not overwrite it."""

    def __init__(self, n: int) -> None:
        self.reasons = np.full(n, None, dtype=object)

    def add(self, mask: np.ndarray, reason: str | Callable[[np.ndarray], Iterable[str]]) -> None:
        fresh = mask & pd.isna(self.reasons)
        if not fresh.any():
            return
        if isinstance(reason, str):
            self.reasons[fresh] = reason
        else:
            self.reasons[fresh] = list(reason(fresh))

    @property
    def bad(self) -> np.ndarray:
        return ~pd.isna(self.reasons)


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A column as stripped strings with empty values as missing."""
    if column not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    series = frame[column].astype("string").str.strip()
    return series.mask(series == "")


def _kept_text(series: pd.Series, good: np.ndarray) -> pd.Series:
    """The good rows as Python strings (None when missing), kept as object: letting pandas
    infer a string column here, for the store to turn back into objects, cost an eighth of
    an import."""
    return pd.Series(series.to_numpy(dtype=object, na_value=None)[good], dtype=object)


def _present(series: pd.Series) -> np.ndarray:
    return series.notna().to_numpy()


def parse_numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): bad marks non-empty text that is not a finite number."""
    numbers = _to_floats(series)
    bad = _present(series) & ~np.isfinite(numbers)
    numbers[bad] = np.nan
    return numbers, bad


def _to_floats(series: pd.Series) -> np.ndarray:
    """Numbers from text; unparsable values become NaN."""
    try:
        # Clean columns (the common case) convert in Arrow's C parser at once.
        arrow = pa.array(series, type=pa.string(), from_pandas=True)
        return pc.cast(arrow, pa.float64()).to_numpy(zero_copy_only=False).copy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        numbers = pd.to_numeric(series.astype(object), errors="coerce")
        return np.array(numbers, dtype=float)


def parse_times(series: pd.Series, time_format: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(UTC milliseconds as float, bad) from unix s/ms, ISO 8601, or an explicit format."""
    present = _present(series)
    millis = np.full(len(series), np.nan)
    if not present.any():
        return millis, np.zeros(len(series), dtype=bool)
    if time_format:
        parsed = pd.to_datetime(
            series.astype(object), format=time_format, errors="coerce", utc=True
        )
        millis = _datetime_millis(parsed)
    else:
        numbers = _to_floats(series)
        is_number = np.isfinite(numbers)
        millis[is_number] = np.where(
            np.abs(numbers[is_number]) >= MS_THRESHOLD, numbers[is_number], numbers[is_number] * 1e3
        )
        textual = present & ~is_number
        if textual.any():
            parsed = pd.to_datetime(
                series[textual].astype(object), format="ISO8601", errors="coerce", utc=True
            )
            millis[textual] = _datetime_millis(parsed)
    bad = present & ~np.isfinite(millis)
    return millis, bad


def _datetime_millis(parsed: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    values = pd.Series(parsed).dt.tz_convert("UTC").dt.tz_localize(None)
    out = values.astype("datetime64[ms]").astype("int64").to_numpy().astype(float)
    out[values.isna().to_numpy()] = np.nan
    return out


def parse_bools(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    lowered = series.str.lower()
    truthy = lowered.isin(TRUE_WORDS).fillna(False).to_numpy(dtype=bool)
    falsy = lowered.isin(FALSE_WORDS).fillna(False).to_numpy(dtype=bool)
    bad = _present(series) & ~truthy & ~falsy
    return truthy, bad


def json_objects(series: pd.Series) -> tuple[list[str | None], np.ndarray]:
    """Validate JSON-object text; returns compact JSON (or None) and the bad mask."""
    out: list[str | None] = [None] * len(series)
    bad = np.zeros(len(series), dtype=bool)
    if not series.notna().any():
        return out, bad
    for position, text in enumerate(series.astype(object)):
        if text is None or text is pd.NA:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            bad[position] = True
            continue
        if isinstance(value, dict):
            out[position] = json.dumps(value, separators=(",", ":"))
        else:
            bad[position] = True
    return out, bad


def extra_columns_as_json(
    frame: pd.DataFrame, extras: list[str], base: list[str | None]
) -> list[str | None]:
    """Merge columns the data model does not name into a JSON object per row, so none is lost."""
    if not extras:
        return base
    records = frame[extras].astype(object).where(frame[extras].notna(), None).to_dict("records")
    merged: list[str | None] = []
    for record, existing in zip(records, base, strict=True):
        values = {k: v for k, v in record.items() if v is not None}
        if existing:
            values = {**values, **json.loads(existing)}
        merged.append(json.dumps(values, separators=(",", ":")) if values else None)
    return merged


def _check_ids(reasons: Reasons, column: str, series: pd.Series, required: bool) -> None:
    if required:
        reasons.add(~_present(series), f"missing {column}")
    too_long = (series.str.len() > MAX_ID_LENGTH).fillna(False).to_numpy(dtype=bool)
    reasons.add(too_long, f"{column} longer than {MAX_ID_LENGTH} characters")


def _bad_value_reason(
    column: str, series: pd.Series, what: str
) -> Callable[[np.ndarray], list[str]]:
    def describe(mask: np.ndarray) -> list[str]:
        return [f"{what} in {column}: {_quote(v)}" for v in series[mask].astype(object)]

    return describe


def _quote(value: object) -> str:
    text = str(value)
    return repr(text[:40] + "…" if len(text) > 40 else text)


def _rejected(frame: pd.DataFrame, first_line: int, reasons: Reasons) -> pd.DataFrame:
    bad = reasons.bad
    lines = np.arange(first_line, first_line + len(frame))[bad]
    rejected = frame[bad].astype(object).reset_index(drop=True)
    rejected.insert(0, "reason", reasons.reasons[bad])
    rejected.insert(0, "line", lines)
    return rejected


def check_interactions(
    frame: pd.DataFrame,
    first_line: int,
    known_event_types: set[str],
    negative_quantity_allowed: set[str],
    time_format: str | None = None,
    undated: bool = False,
) -> Checked:
    n = len(frame)
    reasons = Reasons(n)
    user = _text(frame, "user_id")
    session = _text(frame, "session_id")
    item = _text(frame, "item_id")
    event_type = _text(frame, "event_type")

    _check_ids(reasons, "item_id", item, required=True)
    reasons.add(~_present(user) & ~_present(session), "missing user_id (and no session_id)")
    _check_ids(reasons, "user_id", user, required=False)
    reasons.add(~_present(event_type), "missing event_type")
    unknown = _present(event_type) & ~event_type.isin(known_event_types).fillna(False).to_numpy()
    expected = ", ".join(sorted(known_event_types))
    reasons.add(
        unknown,
        lambda m: [
            f"unknown event type {_quote(v)} (expected one of: {expected})"
            for v in event_type[m].astype(object)
        ],
    )

    raw_time = _text(frame, "timestamp")
    millis, bad_time = parse_times(raw_time, time_format)
    if not undated:
        reasons.add(~_present(raw_time), "missing timestamp")
    reasons.add(bad_time, _bad_value_reason("timestamp", raw_time, "unparsable time"))

    numbers: dict[str, np.ndarray] = {}
    for column in INTERACTION_NUMBER_COLUMNS:
        raw = _text(frame, column)
        numbers[column], bad = parse_numbers(raw)
        reasons.add(bad, _bad_value_reason(column, raw, "not a number"))
    negative = np.nan_to_num(numbers["quantity"], nan=0.0) < 0
    negative &= ~event_type.isin(negative_quantity_allowed).fillna(False).to_numpy(dtype=bool)
    reasons.add(
        negative,
        lambda m: [
            f"negative quantity for {t}: {q:g}"
            for q, t in zip(numbers["quantity"][m], event_type[m].astype(object), strict=True)
        ],
    )

    context, bad_context = json_objects(_text(frame, "context"))
    reasons.add(bad_context, "context is not a JSON object")
    for column in ("session_id", "order_id", "recommendation_id", "event_id"):
        _check_ids(reasons, column, _text(frame, column), required=False)

    extras = [c for c in frame.columns if c not in INTERACTION_COLUMNS]
    context = extra_columns_as_json(frame, extras, context)

    good = ~reasons.bad
    valid = pd.DataFrame(
        {
            "user_id": _kept_text(user, good),
            "item_id": _kept_text(item, good),
            "event_type": _kept_text(event_type, good),
            "timestamp": pd.array(np.round(millis[good]), dtype="Int64"),
            "value": numbers["value"][good],
            "quantity": numbers["quantity"][good],
            "session_id": _kept_text(session, good),
            "order_id": _kept_text(_text(frame, "order_id"), good),
            "recommendation_id": _kept_text(_text(frame, "recommendation_id"), good),
            "context": pd.Series(np.asarray(context, dtype=object)[good], dtype=object),
            "event_id": _kept_text(_text(frame, "event_id"), good),
            "line": np.arange(first_line, first_line + n)[good],
        }
    )
    return Checked(valid, _rejected(frame, first_line, reasons))


def check_items(frame: pd.DataFrame, first_line: int, time_format: str | None = None) -> Checked:
    reasons = Reasons(len(frame))
    item = _text(frame, "item_id")
    _check_ids(reasons, "item_id", item, required=True)
    out: dict[str, object] = {"item_id": item.to_numpy(dtype=object, na_value=None)}
    for column in ("title", "description", "category", "brand"):
        out[column] = _text(frame, column).to_numpy(dtype=object, na_value=None)
    for column in ITEM_NUMBER_COLUMNS:
        raw = _text(frame, column)
        out[column], bad = parse_numbers(raw)
        reasons.add(bad, _bad_value_reason(column, raw, "not a number"))
    reasons.add(np.nan_to_num(out["price"], nan=0.0) < 0, "negative price")  # type: ignore[arg-type]
    raw_available = _text(frame, "available")
    available, bad = parse_bools(raw_available)
    reasons.add(bad, _bad_value_reason("available", raw_available, "not true/false"))
    out["available"] = np.where(_present(raw_available), available, True)
    raw_created = _text(frame, "created_at")
    created, bad = parse_times(raw_created, time_format)
    reasons.add(bad, _bad_value_reason("created_at", raw_created, "unparsable time"))
    out["created_at"] = pd.array(np.round(created), dtype="Int64")
    out["tags"] = _tags(_text(frame, "tags"))
    attributes, bad = json_objects(_text(frame, "attributes"))
    reasons.add(bad, "attributes is not a JSON object")
    extras = [c for c in frame.columns if c not in ITEM_COLUMNS]
    out["attributes"] = extra_columns_as_json(frame, extras, attributes)
    return _typed(out, frame, first_line, reasons)


def _tags(series: pd.Series) -> list[str | None]:
    """Tags as a JSON list from JSON text or a '|' or ',' separated string."""
    result: list[str | None] = []
    for text in series.astype(object):
        if text is None or text is pd.NA:
            result.append(None)
            continue
        if text.startswith("["):
            try:
                tags = [str(t) for t in json.loads(text)]
            except (json.JSONDecodeError, TypeError):
                tags = [text]
        else:
            separator = "|" if "|" in text else ","
            tags = [t.strip() for t in text.split(separator) if t.strip()]
        result.append(json.dumps(tags))
    return result


def check_users(frame: pd.DataFrame, first_line: int, time_format: str | None = None) -> Checked:
    reasons = Reasons(len(frame))
    user = _text(frame, "user_id")
    _check_ids(reasons, "user_id", user, required=True)
    out: dict[str, object] = {"user_id": user.to_numpy(dtype=object, na_value=None)}
    raw_consent = _text(frame, "consent")
    consent, bad = parse_bools(raw_consent)
    reasons.add(bad, _bad_value_reason("consent", raw_consent, "not true/false"))
    out["consent"] = np.where(_present(raw_consent), consent, True)
    onboarding, bad = json_objects(_text(frame, "onboarding"))
    reasons.add(bad, "onboarding is not a JSON object")
    out["onboarding"] = onboarding
    raw_created = _text(frame, "created_at")
    created, bad = parse_times(raw_created, time_format)
    reasons.add(bad, _bad_value_reason("created_at", raw_created, "unparsable time"))
    out["created_at"] = pd.array(np.round(created), dtype="Int64")
    attributes, bad = json_objects(_text(frame, "attributes"))
    reasons.add(bad, "attributes is not a JSON object")
    extras = [c for c in frame.columns if c not in USER_COLUMNS]
    out["attributes"] = extra_columns_as_json(frame, extras, attributes)
    return _typed(out, frame, first_line, reasons)


def _typed(
    columns: dict[str, object], frame: pd.DataFrame, first_line: int, reasons: Reasons
) -> Checked:
    good = ~reasons.bad
    valid = pd.DataFrame(
        {
            name: np.asarray(values, dtype=object)[good]
            if not isinstance(values, pd.api.extensions.ExtensionArray)
            else values[good]
            for name, values in columns.items()
        }
    )
    valid["line"] = np.arange(first_line, first_line + len(frame))[good]
    return Checked(valid, _rejected(frame, first_line, reasons))
