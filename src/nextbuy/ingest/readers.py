"""Read a shop's export (CSV, TSV, JSONL, Parquet; plain, gzip or zip) as batches of strings.

Every value arrives as text (or missing) so that validation, not the reader, decides what a
bad number or a bad time is and can report it with its line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nextbuy.errors import DataError

FORMATS = ("csv", "tsv", "jsonl", "parquet")


@dataclass
class RawBatch:
    """Rows of a file as strings; `first_line` is the file line of the first row."""

    frame: pd.DataFrame
    first_line: int
    # Lines that could not even be split into fields (JSONL only): line -> reason.
    unreadable: dict[int, str]
    bytes_read: int


def detect_format(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the file name, e.g. orders.csv.gz -> ("csv", "gzip")."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = None
    if suffixes and suffixes[-1] in (".gz", ".gzip", ".zip"):
        compression = "zip" if suffixes[-1] == ".zip" else "gzip"
        suffixes = suffixes[:-1]
    ext = suffixes[-1].lstrip(".") if suffixes else ""
    aliases = {"txt": "csv", "tab": "tsv", "json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}
    fmt = aliases.get(ext, ext)
    if fmt not in FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from the name (expected .csv, .tsv, .jsonl or "
            f".parquet, optionally .gz or .zip); pass --format"
        )
    return fmt, compression


def read_batches(
    path: Path, fmt: str | None = None, batch_rows: int = 200_000
) -> Iterator[RawBatch]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    detected, compression = detect_format(path) if fmt is None else (fmt, _compression(path))
    if detected == "parquet":
        if compression:
            raise DataError(f"{path}: Parquet is compressed internally; give the .parquet file")
        yield from _parquet_batches(path, batch_rows)
        return
    raw = open(path, "rb")  # noqa: SIM115 - closed in the finally below, after the generator ends
    try:
        stream = _decompressed(raw, compression, path)
        if detected == "jsonl":
            yield from _jsonl_batches(stream, raw, batch_rows, path)
        else:
            yield from _csv_batches(stream, raw, "\t" if detected == "tsv" else ",", path)
    finally:
        raw.close()


def _compression(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return {"gz": "gzip", "gzip": "gzip", "zip": "zip"}.get(suffix.lstrip("."))


def _decompressed(raw: BinaryIO, compression: str | None, path: Path) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zip":
        archive = zipfile.ZipFile(raw)
        members = [m for m in archive.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise DataError(f"{path}: a zip file must hold exactly one data file")
        return archive.open(members[0])
    return raw


def _csv_batches(stream: BinaryIO, raw: BinaryIO, delimiter: str, path: Path) -> Iterator[RawBatch]:
    header = _read_header(stream, delimiter, path)
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(
                column_names=header, block_size=4 << 20, use_threads=True
            ),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=True,
            ),
        )
        line = 2
        for batch in reader:
            frame = batch.to_pandas(types_mapper=pd.ArrowDtype)
            yield RawBatch(frame, line, {}, raw.tell())
            line += len(frame)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).splitlines()[0]})") from None


def _read_header(stream: BinaryIO, delimiter: str, path: Path) -> list[str]:
    first = stream.readline()
    if not first:
        raise DataError(f"{path}: the file is empty (expected a header line)")
    text = first.decode("utf-8-sig").rstrip("\r\n")
    names = next(csv.reader([text], delimiter=delimiter))
    names = [n.strip() for n in names]
    if len(set(names)) != len(names) or any(not n for n in names):
        raise DataError(f"{path}: line 1: header has empty or repeated column names")
    return names


def _jsonl_batches(
    stream: BinaryIO, raw: BinaryIO, batch_rows: int, path: Path
) -> Iterator[RawBatch]:
    text = io.TextIOWrapper(stream, encoding="utf-8")  # type: ignore[arg-type]
    line_no = 0
    while True:
        records: list[dict[str, str | None]] = []
        unreadable: dict[int, str] = {}
        first = line_no + 1
        for line in text:
            line_no += 1
            if not line.strip():
                unreadable[line_no] = "empty line"
                records.append({})
            else:
                records.append(_json_record(line, line_no, unreadable))
            if len(records) >= batch_rows:
                break
        if not records:
            return
        frame = pd.DataFrame.from_records(records).astype("string")
        yield RawBatch(frame, first, unreadable, raw.tell())


def _json_record(line: str, line_no: int, unreadable: dict[int, str]) -> dict[str, str | None]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        unreadable[line_no] = f"not valid JSON ({exc.msg})"
        return {}
    if not isinstance(obj, dict):
        unreadable[line_no] = "expected a JSON object"
        return {}
    return {key: _as_text(value) for key, value in obj.items()}


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[RawBatch]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    line = 1
    total = path.stat().st_size
    done_groups = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        columns = [_parquet_column_as_text(col) for col in batch.columns]
        table = pa.Table.from_arrays(columns, names=batch.schema.names)
        frame = table.to_pandas(types_mapper=pd.ArrowDtype)
        done_groups += len(frame)
        yield RawBatch(
            frame, line, {}, int(total * done_groups / max(parquet.metadata.num_rows, 1))
        )
        line += len(frame)


def _parquet_column_as_text(column: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
        return pc.strftime(column, format="%Y-%m-%dT%H:%M:%S.%f%z")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if (
        pa.types.is_struct(column.type)
        or pa.types.is_map(column.type)
        or pa.types.is_list(column.type)
    ):
        return pa.array([_as_text(v) for v in column.to_pylist()], pa.string())
    return column.cast(pa.string())
