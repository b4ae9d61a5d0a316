"""Parsing and validation of imports: every row is stored or reported, never both or neither."""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from nextbuy.config import Settings
from nextbuy.errors import DataError
from nextbuy.ingest import ImportOptions, import_file, parse_mapping
from nextbuy.ingest.validate import check_interactions, parse_times
from nextbuy.store.sqlite import SQLiteStore

GOOD_ROWS = [
    {
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "purchase",
        "timestamp": "2024-01-01T10:00:00Z",
        "value": "9.5",
        "quantity": "1",
    },
    {"user_id": "u1", "item_id": "i2", "event_type": "view", "timestamp": "1704103200"},
    {"user_id": "u2", "item_id": "i1", "event_type": "view", "timestamp": "1704103200000"},
    {
        "session_id": "s9",
        "item_id": "i3",
        "event_type": "add_to_cart",
        "timestamp": "2024-01-01 10:00:00",
    },
]


def write_csv(path: Path, rows: list[dict[str, str]], delimiter: str = ",") -> Path:
    fields = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def stored_frame(store: SQLiteStore) -> pd.DataFrame:
    return pa.Table.from_batches(list(store.interactions())).to_pandas()


def test_times_in_every_accepted_form_agree() -> None:
    texts = pd.Series(
        [
            "2024-01-01T10:00:00Z",
            "1704103200",
            "1704103200000",
            "2024-01-01 10:00:00",
            "2024-01-01T11:00:00+01:00",
            "yesterday",
            None,
        ],
        dtype="string",
    )
    millis, bad = parse_times(texts)
    assert list(millis[:5]) == [1704103200000.0] * 5
    assert list(bad) == [False] * 5 + [True, False]


def test_explicit_time_format() -> None:
    millis, bad = parse_times(pd.Series(["01/02/2024 10:00"], dtype="string"), "%d/%m/%Y %H:%M")
    assert not bad.any()
    assert pd.Timestamp(millis[0], unit="ms") == pd.Timestamp("2024-02-01 10:00")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"item_id": "i1", "event_type": "view", "timestamp": "1"}, "missing user_id"),
        ({"user_id": "u", "event_type": "view", "timestamp": "1"}, "missing item_id"),
        (
            {"user_id": "u", "item_id": "i", "event_type": "teleport", "timestamp": "1"},
            "unknown event type",
        ),
        (
            {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": "soon"},
            "unparsable time",
        ),
        (
            {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": ""},
            "missing timestamp",
        ),
        (
            {
                "user_id": "u",
                "item_id": "i",
                "event_type": "view",
                "timestamp": "1",
                "value": "12,5x",
            },
            "not a number in value",
        ),
        (
            {
                "user_id": "u",
                "item_id": "i",
                "event_type": "purchase",
                "timestamp": "1",
                "quantity": "-1",
            },
            "negative quantity for purchase",
        ),
        (
            {
                "user_id": "u",
                "item_id": "i",
                "event_type": "view",
                "timestamp": "1",
                "context": "[1]",
            },
            "context is not a JSON object",
        ),
        (
            {"user_id": "u" * 300, "item_id": "i", "event_type": "view", "timestamp": "1"},
            "user_id longer than",
        ),
    ],
)
def test_each_bad_row_is_rejected_with_its_reason(
    tmp_path: Path, settings: Settings, store: SQLiteStore, row: dict[str, str], reason: str
) -> None:
    rows = [*GOOD_ROWS, row]
    columns = {"user_id", "item_id", "event_type", "timestamp"}
    rows = [{c: r.get(c, "") for c in columns | set(r)} for r in rows]
    path = write_csv(tmp_path / "events.csv", rows)
    report = import_file(store, settings, path, ImportOptions("interactions"))
    assert report.stored == len(GOOD_ROWS)
    assert report.rejected == 1
    rejects = pd.read_csv(report.rejects_path)
    assert rejects.loc[0, "line"] == len(rows) + 1  # header is line 1
    assert reason in rejects.loc[0, "reason"]
    assert rejects.loc[0, "file"] == str(path)


def test_negative_quantity_allowed_for_declared_types(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    settings.events.custom["return"] = 0.0
    settings.events.negative_quantity_allowed.append("return")
    path = write_csv(
        tmp_path / "r.csv",
        [
            {
                "user_id": "u",
                "item_id": "i",
                "event_type": "return",
                "timestamp": "1",
                "quantity": "-2",
            }
        ],
    )
    assert import_file(store, settings, path, ImportOptions("interactions")).stored == 1


@pytest.mark.parametrize(
    "form", ["csv", "tsv", "csv.gz", "csv.zip", "jsonl", "jsonl.gz", "parquet"]
)
def test_every_file_form_imports_the_same_rows(
    tmp_path: Path, settings: Settings, store: SQLiteStore, form: str
) -> None:
    frame = pd.DataFrame(GOOD_ROWS)
    path = tmp_path / f"events.{form}"
    if form == "csv":
        frame.to_csv(path, index=False)
    elif form == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif form == "csv.gz":
        frame.to_csv(path, index=False, compression="gzip")
    elif form == "csv.zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("events.csv", frame.to_csv(index=False))
    elif form.startswith("jsonl"):
        lines = "\n".join(json.dumps(r) for r in GOOD_ROWS) + "\n"
        if form.endswith(".gz"):
            path.write_bytes(gzip.compress(lines.encode()))
        else:
            path.write_text(lines)
    else:
        pq.write_table(pa.Table.from_pandas(frame), path)
    report = import_file(store, settings, path, ImportOptions("interactions"))
    assert (report.stored, report.rejected) == (4, 0)
    stored = stored_frame(store).sort_values(["item_id", "user_id"])
    assert set(stored["item_id"]) == {"i1", "i2", "i3"}
    assert (stored["timestamp"] == pd.Timestamp("2024-01-01 10:00", tz="UTC")).all()


def test_jsonl_lines_that_are_not_json_are_reported(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(GOOD_ROWS[0]) + "\n{oops\n" + json.dumps(GOOD_ROWS[1]) + "\n")
    report = import_file(store, settings, path, ImportOptions("interactions"))
    assert (report.stored, report.rejected) == (2, 1)
    rejects = pd.read_csv(report.rejects_path)
    assert rejects.loc[0, "line"] == 2
    assert "not valid JSON" in rejects.loc[0, "reason"]


def test_column_mapping_and_extra_columns_kept_in_context(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    path = write_csv(
        tmp_path / "shop.csv",
        [
            {
                "CustomerID": "17850",
                "StockCode": "85123A",
                "InvoiceDate": "2010-12-01 08:26:00",
                "Country": "United Kingdom",
            }
        ],
    )
    options = ImportOptions(
        "interactions",
        parse_mapping(["user_id=CustomerID", "item_id=StockCode", "timestamp=InvoiceDate"]),
        event_type="purchase",
    )
    report = import_file(store, settings, path, options)
    assert report.stored == 1
    assert report.extra_columns == ["Country"]
    row = stored_frame(store).iloc[0]
    assert (row["user_id"], row["item_id"], row["event_type"]) == ("17850", "85123A", "purchase")
    assert json.loads(row["context"]) == {"Country": "United Kingdom"}


def test_mapping_to_a_missing_column_is_a_clear_error(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    path = write_csv(tmp_path / "e.csv", GOOD_ROWS)
    with pytest.raises(DataError, match="no column 'CustomerID'"):
        import_file(store, settings, path, ImportOptions("interactions", {"user_id": "CustomerID"}))
    with pytest.raises(DataError, match="expected FIELD=COLUMN"):
        parse_mapping(["user_id"])


def test_reimporting_a_file_stores_nothing_twice(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    path = write_csv(tmp_path / "e.csv", GOOD_ROWS)
    first = import_file(store, settings, path, ImportOptions("interactions"))
    again = import_file(store, settings, path, ImportOptions("interactions"))
    assert (first.stored, again.stored, again.duplicates) == (4, 0, 4)
    assert store.count_events() == 4


def test_event_id_makes_a_resent_event_idempotent(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    rows = [{**GOOD_ROWS[0], "event_id": "e-1"}, {**GOOD_ROWS[1], "event_id": "e-2"}]
    import_file(store, settings, write_csv(tmp_path / "a.csv", rows), ImportOptions("interactions"))
    resent = [{**GOOD_ROWS[0], "event_id": "e-1"}, {**GOOD_ROWS[2], "event_id": "e-3"}]
    report = import_file(
        store, settings, write_csv(tmp_path / "b.csv", resent), ImportOptions("interactions")
    )
    assert (report.stored, report.duplicates) == (1, 1)
    assert store.count_events() == 3


def test_items_and_users_upsert_with_attributes(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    items = write_csv(
        tmp_path / "items.csv",
        [
            {
                "item_id": "i1",
                "title": "Runner",
                "category": "Shoes > Running",
                "price": "89.9",
                "available": "yes",
                "tags": "sale|new",
                "colour": "red",
            },
            {"item_id": "i2", "title": "Cap", "price": "-3"},
            {"item_id": "i3", "title": "Sock", "price": "2", "available": "maybe"},
        ],
    )
    report = import_file(store, settings, items, ImportOptions("items"))
    assert (report.stored, report.rejected) == (1, 2)
    catalog = store.items().set_index("item_id")
    assert catalog.loc["i1", "price"] == pytest.approx(89.9)
    assert catalog.loc["i1", "tags"] == ["sale", "new"]
    assert catalog.loc["i1", "attributes"] == {"colour": "red"}
    updated = write_csv(tmp_path / "items2.csv", [{"item_id": "i1", "price": "79.9"}])
    import_file(store, settings, updated, ImportOptions("items"))
    assert store.items().set_index("item_id").loc["i1", "price"] == pytest.approx(79.9)
    users = write_csv(
        tmp_path / "users.csv", [{"user_id": "u1", "consent": "false", "segment": "vip"}]
    )
    import_file(store, settings, users, ImportOptions("users"))
    profile = store.users().set_index("user_id").loc["u1"]
    assert not profile["consent"]
    assert profile["attributes"] == {"segment": "vip"}


FIELD_VALUES = {
    "user_id": st.one_of(st.just(""), st.text(min_size=1, max_size=5), st.just("u" * 300)),
    "item_id": st.one_of(st.just(""), st.text(min_size=1, max_size=5)),
    "event_type": st.sampled_from(["view", "purchase", "", "bogus", "rating"]),
    "timestamp": st.one_of(
        st.just(""),
        st.just("2024-01-01"),
        st.integers(0, 2_000_000_000_000).map(str),
        st.text(max_size=6),
    ),
    "value": st.one_of(
        st.just(""), st.floats(allow_nan=False, allow_infinity=False).map(str), st.text(max_size=4)
    ),
    "quantity": st.one_of(st.just(""), st.integers(-3, 5).map(str), st.text(max_size=3)),
    "context": st.sampled_from(["", "{}", '{"device": "ios"}', "[", "3"]),
}


@given(rows=st.lists(st.fixed_dictionaries(FIELD_VALUES), min_size=1, max_size=40))
@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_row_is_stored_or_reported_never_both_never_neither(
    rows: list[dict[str, str]],
) -> None:
    frame = pd.DataFrame(rows).astype("string")
    checked = check_interactions(frame, 2, {"view", "purchase", "rating"}, set())
    valid_lines = set(checked.valid["line"])
    rejected_lines = set(checked.rejected["line"])
    assert valid_lines.isdisjoint(rejected_lines)
    assert valid_lines | rejected_lines == set(range(2, 2 + len(rows)))
    assert checked.rejected["reason"].map(bool).all()
