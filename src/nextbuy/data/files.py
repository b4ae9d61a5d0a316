"""Arrays and text written to disk whole or not at all, and sparse matrices as plain arrays:
what every saved model and pipeline folder is made of (never pickles)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp


def str_array(values: np.ndarray) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=str) if len(values) else np.zeros(0, "U1")


def pack_csr(name: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """A CSR matrix as plain arrays for an npz file."""
    matrix = sp.csr_matrix(matrix)
    return {
        f"{name}.data": matrix.data,
        f"{name}.indices": matrix.indices,
        f"{name}.indptr": matrix.indptr,
        f"{name}.shape": np.asarray(matrix.shape, np.int64),
    }


def unpack_csr(name: str, arrays: Mapping[str, np.ndarray]) -> sp.csr_matrix:
    """The inverse of `pack_csr`."""
    shape = tuple(int(x) for x in arrays[f"{name}.shape"])
    parts = (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"])
    return sp.csr_matrix(parts, shape=shape)


def atomic_savez(path: Path, arrays: Mapping[str, Any]) -> None:
    # Written beside and renamed, so an interrupted save leaves the old file whole.
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
