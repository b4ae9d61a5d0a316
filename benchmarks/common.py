"""Helpers shared by the benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pandas as pd

from nextbuy.evaluation.splits import Split

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every figure here was measured by a script in `benchmarks/`; each section says which.\n"
    "Scripts rewrite only their own section.\n"
)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"model name\s*:\s*(.+)", text)
    return match.group(1).strip() if match else "unknown CPU"


def library_versions(
    names: tuple[str, ...] = (
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "implicit",
        "scikit-learn",
        "lightgbm",
        "optuna",
        "fastapi",
        "uvicorn",
    ),
) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def thread_settings() -> str:
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in keys)


def machine_summary() -> str:
    return (
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{library_versions()}; threads: {thread_settings()}."
    )


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section between <!-- key:start --> and <!-- key:end -->."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    block = f"<!-- {key}:start -->\n## {title}\n\n{body.strip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {key}:start -->.*?<!-- {key}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    BENCHMARKS_MD.write_text(text)


# -- model benchmarks (bench_movielens.py, bench_online_retail.py) ---------------------------


def model_versions() -> str:
    """Python and the libraries that decide model numbers and timings."""
    names = ("numpy", "scipy", "implicit", "pandas", "optuna", "threadpoolctl")
    return f"Python {platform.python_version()}; {library_versions(names)}"


def blas_threads() -> str:
    """The BLAS/OpenMP pools threadpoolctl sees, with their current thread counts."""
    from threadpoolctl import threadpool_info

    pools = [f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()]
    return ", ".join(pools) or "none loaded"


def median_seconds(run: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls (time.perf_counter)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(frame: pd.DataFrame, formats: dict[str, str] | None = None) -> str:
    """A GitHub table of `frame`: text left, numbers right, NaN as a dash."""
    formats = formats or {}
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for row in frame.itertuples(index=False):
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            if isinstance(value, float) and math.isnan(value):
                cells.append("–")
            elif isinstance(value, float):
                cells.append(format(value, formats.get(col, ".4f")))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def without_test(train: pd.DataFrame, validation: pd.DataFrame, protocol: str) -> Split:
    """A split for tuning: train and validation only, the test part left empty on purpose."""
    return Split(train=train, validation=validation, test=train.iloc[:0], protocol=protocol)
