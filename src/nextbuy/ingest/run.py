"""Import one file (or frame) atomically: validate, store the valid rows, report the rest."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from nextbuy.config import Settings
from nextbuy.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS, USER_COLUMNS
from nextbuy.errors import DataError
from nextbuy.ingest.readers import RawBatch, read_batches
from nextbuy.ingest.validate import Checked, check_interactions, check_items, check_users
from nextbuy.store.base import Store

KINDS = ("interactions", "items", "users")
COLUMNS_OF_KIND = {
    "interactions": INTERACTION_COLUMNS,
    "items": ITEM_COLUMNS,
    "users": USER_COLUMNS,
}
# Event key ranges, disjoint so that no two kinds of key can collide (a collision would
# silently drop an event as a re-send): file lines (file id << 32 | line) below 2^61, API
# events without an event_id in [2^61, 2^62), hashed event_ids from 2^62.
API_KEY_BIT = 1 << 61
HASHED_KEY_BIT = 1 << 62
LINE_BITS = 32

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass
class ImportOptions:
    kind: str
    mapping: dict[str, str] = field(default_factory=dict)  # nextbuy column -> file column
    fmt: str | None = None
    time_format: str | None = None
    event_type: str | None = None  # for files without an event_type column
    undated: bool = False


@dataclass
class ImportReport:
    source: str
    kind: str
    rows: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects_path: Path | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """['user_id=CustomerID', ...] -> {'user_id': 'CustomerID'}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise DataError(f"--map {pair!r}: expected FIELD=COLUMN, e.g. user_id=CustomerID")
        mapping[target.strip()] = source.strip()
    return mapping


def import_file(
    store: Store,
    settings: Settings,
    path: Path,
    options: ImportOptions,
    progress: Progress | None = None,
) -> ImportReport:
    """Import one file; all of its valid rows are stored, or (on any failure) none."""
    total = path.stat().st_size if path.is_file() else 0
    digest = file_sha256(path) if path.is_file() else ""
    batches = read_batches(path, options.fmt, settings.import_.batch_rows)

    def report_progress(batch: RawBatch) -> None:
        if progress is not None:
            progress(batch.bytes_read, total)

    return _import_batches(store, settings, str(path), digest, batches, options, report_progress)


def import_frame(
    store: Store, settings: Settings, frame: pd.DataFrame, source: str, options: ImportOptions
) -> ImportReport:
    """Import a pandas DataFrame through the same validation as a file."""
    text = frame_as_text(frame)
    digest = hashlib.sha256(source.encode()).hexdigest()
    step = settings.import_.batch_rows
    batches = (
        RawBatch(text.iloc[start : start + step].reset_index(drop=True), start + 1, {}, 0)
        for start in range(0, len(text), step)
    )
    return _import_batches(store, settings, source, digest, batches, options, lambda b: None)


def frame_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed columns to the text the validators read: times as UTC ms, objects as JSON."""
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        series = frame[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":
            utc = series.dt.tz_localize("UTC") if series.dt.tz is None else series
            millis = utc.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ms]")
            text = millis.astype("int64").astype(str).where(series.notna(), None)
        elif series.dtype == object and series.map(lambda v: isinstance(v, dict | list)).any():
            text = series.map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
        else:
            text = series.astype(object).where(series.notna(), None)
            text = text.map(lambda v: v if v is None or isinstance(v, str) else _number_text(v))
        out[column] = text.astype("string")
    return out


def _number_text(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return str(value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _import_batches(
    store: Store,
    settings: Settings,
    source: str,
    digest: str,
    batches: Iterator[RawBatch],
    options: ImportOptions,
    on_batch: Callable[[RawBatch], None],
) -> ImportReport:
    if options.kind not in KINDS:
        raise DataError(f"{options.kind!r}: expected one of {', '.join(KINDS)}")
    report = ImportReport(source=source, kind=options.kind)
    started = time.perf_counter()
    started_at = int(time.time() * 1000)
    rejects = RejectsWriter(settings.rejects_dir, source)
    file_id = int(digest[:8], 16) >> 2 if digest else 0
    try:
        with store.atomic():
            for raw in batches:
                frame = _mapped(raw.frame, options, source, report)
                checked = _check(frame, raw, options, settings)
                _store(store, checked, options.kind, file_id, report)
                rejects.write(checked.rejected, raw.unreadable, report)
                on_batch(raw)
            report.seconds = time.perf_counter() - started
            report.rejects_path = rejects.finish()
            store.record_import(_import_record(report, digest, started_at))
    except BaseException:
        rejects.discard()
        raise
    return report


def _mapped(
    frame: pd.DataFrame, options: ImportOptions, source: str, report: ImportReport
) -> pd.DataFrame:
    columns = set(frame.columns)
    missing = [c for c in options.mapping.values() if c not in columns]
    if missing:
        raise DataError(
            f"{source}: no column {missing[0]!r} to map (columns: {', '.join(frame.columns)})"
        )
    known = set(COLUMNS_OF_KIND[options.kind])
    unknown_targets = [t for t in options.mapping if t not in known]
    if unknown_targets:
        raise DataError(
            f"--map {unknown_targets[0]}=...: not a field of {options.kind} "
            f"(fields: {', '.join(COLUMNS_OF_KIND[options.kind])})"
        )
    renamed = frame.rename(columns={v: k for k, v in options.mapping.items()})
    if options.kind == "interactions":
        _require_interaction_columns(renamed, options, source)
    elif options.kind not in renamed and f"{options.kind[:-1]}_id" not in renamed:
        raise DataError(f"{source}: no {options.kind[:-1]}_id column (map one with --map)")
    if not report.extra_columns:
        report.extra_columns = [c for c in renamed.columns if c not in known]
    return renamed


def _require_interaction_columns(frame: pd.DataFrame, options: ImportOptions, source: str) -> None:
    if "item_id" not in frame:
        raise DataError(f"{source}: no item_id column (map one with --map item_id=COLUMN)")
    if "user_id" not in frame and "session_id" not in frame:
        raise DataError(f"{source}: no user_id or session_id column (map one with --map)")
    if "event_type" not in frame:
        if options.event_type is None:
            raise DataError(
                f"{source}: no event_type column (map one with --map, or pass --event-type)"
            )
        frame["event_type"] = options.event_type
    if "timestamp" not in frame and not options.undated:
        raise DataError(
            f"{source}: no timestamp column (map one with --map timestamp=COLUMN, "
            "or pass --undated for data without time)"
        )


def _check(
    frame: pd.DataFrame, raw: RawBatch, options: ImportOptions, settings: Settings
) -> Checked:
    time_format = options.time_format or settings.import_.time_format
    if options.kind == "interactions":
        return check_interactions(
            frame,
            raw.first_line,
            settings.events.known_types(),
            set(settings.events.negative_quantity_allowed),
            time_format,
            options.undated,
        )
    if options.kind == "items":
        return check_items(frame, raw.first_line, time_format)
    return check_users(frame, raw.first_line, time_format)


def _store(store: Store, checked: Checked, kind: str, file_id: int, report: ImportReport) -> None:
    valid = checked.valid
    report.rows += len(valid) + len(checked.rejected)
    if valid.empty:
        return
    if kind == "interactions":
        valid = valid.assign(event_key=event_keys(valid, file_id))
        result = store.append_events(valid.drop(columns="line"))
        report.stored += result.stored
        report.duplicates += result.duplicates
    elif kind == "items":
        report.stored += store.upsert_items(valid.drop(columns="line"))
    else:
        report.stored += store.upsert_users(valid.drop(columns="line"))


def event_keys(valid: pd.DataFrame, file_id: int) -> np.ndarray:
    """Stable key per event: its event_id when given, else (file content, line).

    The same file imported twice yields the same keys, so nothing is stored twice.
    """
    lines = valid["line"].to_numpy(dtype=np.int64)
    keys = (np.int64(file_id) << LINE_BITS) | lines
    event_ids = valid["event_id"]
    has_id = event_ids.notna().to_numpy()
    if has_id.any():
        hashed = pd.util.hash_array(event_ids[has_id].to_numpy(dtype=object))
        keys[has_id] = (
            (hashed & np.uint64(HASHED_KEY_BIT - 1)) | np.uint64(HASHED_KEY_BIT)
        ).astype(np.int64)
    return keys


class RejectsWriter:
    """Rejected rows go to a CSV written beside the data; it appears only when complete."""

    def __init__(self, folder: Path, source: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = Path(source).name.replace(":", "_") or "import"
        self.path = folder / f"{stamp}-{name}.rejects.csv"
        self.partial = self.path.with_suffix(".partial")
        self._handle = None
        self._writer: csv.writer | None = None  # type: ignore[valid-type]
        self.source = source

    def write(
        self, rejected: pd.DataFrame, unreadable: dict[int, str], report: ImportReport
    ) -> None:
        if rejected.empty:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.partial, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["file", "line", "reason", "row"])
        fields = [c for c in rejected.columns if c not in ("line", "reason")]
        for record in rejected.itertuples(index=False):
            line = int(record[0])
            reason = unreadable.get(line, record[1])
            row = {
                f: v
                for f, v in zip(fields, record[2:], strict=True)
                if v is not None and v is not pd.NA
            }
            self._writer.writerow([self.source, line, reason, json.dumps(row, default=str)])
            key = reason.split(":")[0].split(" '")[0]
            report.reasons[key] = report.reasons.get(key, 0) + 1
        report.rejected += len(rejected)

    def finish(self) -> Path | None:
        if self._handle is None:
            return None
        self._handle.close()
        self.partial.replace(self.path)
        return self.path

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self.partial.unlink(missing_ok=True)


def _import_record(report: ImportReport, digest: str, started_at: int) -> dict[str, object]:
    return {
        "kind": report.kind,
        "source": report.source,
        "sha256": digest,
        "started_at": started_at,
        "finished_at": int(time.time() * 1000),
        "rows": report.rows,
        "stored": report.stored,
        "duplicates": report.duplicates,
        "rejected": report.rejected,
        "rejects_path": str(report.rejects_path) if report.rejects_path else None,
    }
