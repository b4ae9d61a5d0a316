"""Import throughput and peak memory of `nextbuy import` for 1M- and 10M-row CSV files.

Each run is a fresh process importing into an empty store, so peak RSS is the import's own.
Usage: python benchmarks/bench_import.py [--rows 1000000 10000000] [--runs 3]
Writes the "import" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_summary, write_section

WORK = Path(__file__).resolve().parent / ".work"
CHUNK = 1_000_000


def write_events_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A shop-like event file: 8 columns, 200k users, 50k items, sessions, prices."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        handle.write("user_id,item_id,event_type,timestamp,value,quantity,session_id,order_id\n")
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            kinds = rng.choice(["view", "add_to_cart", "purchase"], n, p=[0.7, 0.2, 0.1])
            sessions = rng.integers(0, rows // 8 + 1, n)
            frame = pd.DataFrame(
                {
                    "user_id": np.char.add("u", rng.integers(0, 200_000, n).astype(str)),
                    "item_id": np.char.add("sku", rng.zipf(1.3, n).clip(max=50_000).astype(str)),
                    "event_type": kinds,
                    "timestamp": 1_700_000_000_000 + rng.integers(0, 31_536_000_000, n),
                    "value": np.round(rng.lognormal(3, 1, n), 2),
                    "quantity": rng.integers(1, 4, n),
                    "session_id": np.char.add("s", sessions.astype(str)),
                    "order_id": np.where(
                        kinds == "purchase", np.char.add("o", sessions.astype(str)), ""
                    ),
                }
            )
            frame.to_csv(handle, header=False, index=False)


def one_run(csv_path: Path, folder: Path) -> tuple[float, float, int]:
    """(seconds, rows per second, peak RSS in MiB) of one import in a fresh process."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "nextbuy.toml").write_text('data_dir = "data"\n')
    script = (
        "import sys, time; from pathlib import Path;"
        "from nextbuy.config import load_settings; from nextbuy.store import open_store;"
        "from nextbuy.ingest import ImportOptions, import_file;"
        "s = load_settings(Path('nextbuy.toml')); st = open_store(s.store_path);"
        f"r = import_file(st, s, Path({str(csv_path)!r}), ImportOptions('interactions'));"
        "print(r.rows, r.stored, r.seconds)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=folder, stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read() if process.stdout else ""
    if status != 0:
        raise SystemExit(f"import failed: {output}")
    rows, stored, seconds = output.split()
    assert int(rows) == int(stored), "benchmark rows must all be valid"
    return float(seconds), int(rows) / float(seconds), usage.ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    lines = [
        "| rows | file size | runs | median seconds | median rows/s | peak RSS (MiB, max) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in args.rows:
        csv_path = WORK / f"events-{rows}.csv"
        if not csv_path.exists():
            write_events_csv(csv_path, rows)
        results = [one_run(csv_path, WORK / "store") for _ in range(args.runs)]
        seconds = statistics.median(r[0] for r in results)
        rate = statistics.median(r[1] for r in results)
        peak = max(r[2] for r in results)
        size = csv_path.stat().st_size / 2**20
        cells = [f"{rows:,}", f"{size:,.0f} MiB", str(len(results)), f"{seconds:.1f}"]
        line = "| " + " | ".join([*cells, f"{rate:,.0f}", f"{peak:,}"]) + " |"
        print(line, flush=True)
        lines.append(line)
    shutil.rmtree(WORK / "store", ignore_errors=True)
    body = "\n".join(
        [
            "Import of an 8-column CSV (user, item, event type, unix-ms time, value, quantity,",
            "session, order) into an empty SQLite store, one transaction per file, each run in a",
            "fresh process. Command: `python benchmarks/bench_import.py`.",
            "",
            machine_summary(),
            f"Load average at the end (other work on the machine counts here): "
            f"{os.getloadavg()[0]:.1f}.",
            "",
            *lines,
        ]
    )
    write_section("import", "Import throughput and memory", body)


if __name__ == "__main__":
    main()
