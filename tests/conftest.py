"""Shared fixtures: isolated settings and store per test, and the real datasets when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextbuy.config import Settings, load_settings
from nextbuy.store.sqlite import SQLiteStore

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEXTBUY_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
NO_SHARED_REASON = "../shared/data not found beside the repository"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(NO_SHARED_REASON)
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(settings.store_path)
    yield opened
    opened.close()
