"""The SQLite store: atomic imports (even when killed), erasure, bounded streaming."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nextbuy.config import Settings
from nextbuy.ingest import ImportOptions, import_file
from nextbuy.store.sqlite import SQLiteStore


def events_csv(path: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pd.DataFrame(
        {
            "user_id": np.char.add("u", rng.integers(0, 500, n).astype(str)),
            "item_id": np.char.add("i", rng.integers(0, 300, n).astype(str)),
            "event_type": rng.choice(["view", "purchase"], n),
            "timestamp": 1_700_000_000 + rng.integers(0, 10_000_000, n),
        }
    ).to_csv(path, index=False)
    return path


def project(tmp_path: Path) -> Path:
    (tmp_path / "nextbuy.toml").write_text('data_dir = "data"\n[import]\nbatch_rows = 20000\n')
    return tmp_path


def count_rows(store_path: Path) -> tuple[int, int]:
    store = SQLiteStore(store_path)
    try:
        return store.count_events(), len(store.imports())
    finally:
        store.close()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_an_import_killed_midway_leaves_the_store_as_before(tmp_path: Path, how: int) -> None:
    folder = project(tmp_path)
    small = events_csv(folder / "small.csv", 100)
    big = events_csv(folder / "big.csv", 1_500_000, seed=1)
    command = [sys.executable, "-m", "nextbuy.cli", "import", "interactions"]
    subprocess.run([*command, str(small)], cwd=folder, check=True, capture_output=True)
    store_path = folder / "data" / "nextbuy.db"
    assert count_rows(store_path) == (100, 1)

    process = subprocess.Popen(
        [*command, str(big)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a suite started in the background (`cmd &`) ignores SIGINT, and children inherit that
        preexec_fn=_default_sigint,
    )
    wal = store_path.with_name("nextbuy.db-wal")
    deadline = time.monotonic() + 60
    # Wait until the import has written part of its rows into the write-ahead log. It writes
    # them in well under a second, so the first megabyte is the cue (polled every 10 ms).
    while time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 1_000_000):
        time.sleep(0.01)
    assert process.poll() is None, "the import finished before it could be interrupted"
    os.kill(process.pid, how)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    if how == signal.SIGINT:
        assert b"interrupted" in stderr
        assert b"Traceback" not in stderr
    assert count_rows(store_path) == (100, 1)
    assert not list((folder / "data").glob("rejects/*.partial"))


def test_erasure_leaves_no_trace_of_the_user(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    path = events_csv(tmp_path / "e.csv", 2_000)
    import_file(store, settings, path, ImportOptions("interactions"))
    store.upsert_users(
        pd.DataFrame([{"user_id": "u7", "attributes": {"segment": "vip"}}, {"user_id": "u8"}])
    )
    before = store.count_events()
    own = len(store.user_events("u7", limit=10_000))
    assert own > 0
    report = store.erase_user("u7")
    assert report.rows_deleted["events"] == own
    assert report.rows_deleted["users"] == 1
    assert store.count_events() == before - own
    assert store.user_events("u7").empty
    assert "u7" not in set(store.users()["user_id"])
    # No row of any table, in any column, still names the user.
    raw = store._conn  # inspection of the file itself, not through the interface
    for (table,) in raw.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        columns = [c[1] for c in raw.execute(f"PRAGMA table_info({table})")]
        for column in columns:
            hits = raw.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = 'u7'").fetchone()
            assert hits[0] == 0, f"{table}.{column} still holds the erased user"


def test_interactions_stream_in_bounded_batches(
    tmp_path: Path, settings: Settings, store: SQLiteStore
) -> None:
    import_file(
        store, settings, events_csv(tmp_path / "e.csv", 5_000), ImportOptions("interactions")
    )
    sizes = [b.num_rows for b in store.interactions(batch_rows=1_000)]
    assert sizes == [1_000] * 5
    since = pd.Timestamp(1_705_000_000, unit="s", tz="UTC")
    later = sum(b.num_rows for b in store.interactions(since=since.to_pydatetime()))
    frame = pd.read_csv(tmp_path / "e.csv")
    assert later == int((frame["timestamp"] >= 1_705_000_000).sum())
