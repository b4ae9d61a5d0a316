"""nextbuy: a self-hosted product recommendation engine.

`nextbuy.Engine` trains and recommends from Python; `nextbuy.evaluate` compares models on a
split of your data and returns a DataFrame. Both load lazily so that `import nextbuy` is cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Engine", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from nextbuy.engine import Engine

        return Engine
    if name == "evaluate":
        from nextbuy.evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'nextbuy' has no attribute {name!r}")
