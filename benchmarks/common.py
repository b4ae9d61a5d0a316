"""Helpers shared by the benchmark scripts: machine description and BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

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
