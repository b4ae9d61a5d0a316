"""Importing the real datasets in ../shared/data gives the counts their READMEs state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy.config import Settings
from nextbuy.ingest import ImportOptions, import_file
from nextbuy.ingest.audit import audit
from nextbuy.store.sqlite import SQLiteStore

pytestmark = pytest.mark.shared


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nextbuy.cli", *args], cwd=folder, capture_output=True, text=True
    )


def test_movielens_100k_through_the_cli(tmp_path: Path, shared_data: Path) -> None:
    folder = shared_data / "ml-100k"
    assert run_cli(tmp_path, "init").returncode == 0
    done = run_cli(tmp_path, "import", "interactions", str(folder / "interactions.csv"))
    assert done.returncode == 0, done.stderr
    done = run_cli(tmp_path, "import", "items", str(folder / "items.csv"))
    assert done.returncode == 0, done.stderr
    stats = json.loads(run_cli(tmp_path, "stats", "--json").stdout)
    assert stats["events"] == 100_000
    assert stats["events_by_type"] == {"rating": 100_000}
    assert (stats["users"], stats["items_in_events"], stats["catalog_items"]) == (943, 1682, 1682)
    assert stats["first_event"].startswith("1997-09-20T03:05:10")
    assert stats["last_event"].startswith("1998-04-22T23:10:38")
    assert stats["items_missing_from_catalog"] == 0


def test_movielens_1m_undated_pairs(
    tmp_path: Path, settings: Settings, store: SQLiteStore, shared_data: Path
) -> None:
    settings.events.custom["rated"] = 1.0
    report = import_file(
        store,
        settings,
        shared_data / "ml-1m" / "interactions.csv",
        ImportOptions("interactions", undated=True),
    )
    assert (report.stored, report.rejected) == (1_000_209, 0)
    stats = audit(store)
    assert (stats["users"], stats["items_in_events"]) == (6_040, 3_706)
    assert stats["undated_events"] == 1_000_209


def test_online_retail_with_catalog(
    settings: Settings, store: SQLiteStore, shared_data: Path
) -> None:
    folder = shared_data / "online-retail"
    settings.events.custom["cancellation"] = 0.0
    report = import_file(
        store, settings, folder / "interactions.csv", ImportOptions("interactions")
    )
    assert (report.stored, report.rejected) == (406_829, 0)
    items = import_file(
        store,
        settings,
        folder / "items.csv",
        ImportOptions("items", {"title": "description", "price": "unit_price_median"}),
    )
    assert items.stored == 4_070
    stats = audit(store)
    assert stats["events_by_type"] == {"cancellation": 8_905, "purchase": 397_924}
    assert (stats["users"], stats["items_in_events"]) == (4_372, 3_684)
    assert stats["items_missing_from_catalog"] == 0
    assert stats["catalog_items_never_interacted"] == 4_070 - 3_684


CORRUPTIONS = {
    "user_id": ("", "missing user_id"),
    "timestamp": ("31/02/2011 25:61", "unparsable time"),
    "value": ("twelve", "not a number in value"),
    "event_type": ("teleport", "unknown event type"),
}


def test_one_percent_corrupted_online_retail_keeps_every_valid_row(
    tmp_path: Path, settings: Settings, store: SQLiteStore, shared_data: Path
) -> None:
    settings.events.custom["cancellation"] = 0.0
    frame = pd.read_csv(
        shared_data / "online-retail" / "interactions.csv", dtype=str, keep_default_na=False
    )
    rng = np.random.default_rng(7)
    broken = rng.choice(len(frame), size=len(frame) // 100, replace=False)
    kinds = rng.choice(list(CORRUPTIONS), size=len(broken))
    for column in CORRUPTIONS:
        rows = broken[kinds == column]
        frame.loc[rows, column] = CORRUPTIONS[column][0]
    path = tmp_path / "corrupted.csv"
    frame.to_csv(path, index=False)

    report = import_file(store, settings, path, ImportOptions("interactions"))
    assert report.stored == len(frame) - len(broken)
    assert report.rejected == len(broken)
    assert store.count_events() == len(frame) - len(broken)
    rejects = pd.read_csv(report.rejects_path)
    expected_lines = {int(r) + 2: CORRUPTIONS[k][1] for r, k in zip(broken, kinds, strict=True)}
    assert set(rejects["line"]) == set(expected_lines)
    for line, reason in zip(rejects["line"], rejects["reason"], strict=True):
        assert expected_lines[line] in reason
