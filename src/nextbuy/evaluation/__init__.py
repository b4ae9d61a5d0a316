"""Offline evaluation: splits, metrics, the runner that compares models, reports and tuning.

```python
import nextbuy
table = nextbuy.evaluate(interactions, ["ease", "als", "itemknn"], protocol="discovery")
```
The runner, the report and tuning load on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from nextbuy.errors import ConfigError

if TYPE_CHECKING:
    from nextbuy.evaluation.splits import Split
    from nextbuy.models.base import Recommender

SplitName = Literal["temporal", "leave_last_out", "stratified"]
DEFAULT_MODELS: tuple[str, ...] = ("itemknn", "ease", "als")

_LAZY: dict[str, str] = {
    "EvaluationResult": "nextbuy.evaluation.runner",
    "evaluate_models": "nextbuy.evaluation.runner",
    "write_report": "nextbuy.evaluation.report",
    "print_table": "nextbuy.evaluation.report",
    "TuningResult": "nextbuy.evaluation.tuning",
    "tune": "nextbuy.evaluation.tuning",
}

__all__ = ["DEFAULT_MODELS", "evaluate", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nextbuy.evaluation' has no attribute {name!r}")


def evaluate(
    interactions: pd.DataFrame,
    models: Sequence[str] | Mapping[str, Recommender] | None = None,
    protocol: Literal["standard", "discovery", "repeat"] = "discovery",
    split: SplitName | Split = "temporal",
    test_fraction: float = 0.2,
    items: pd.DataFrame | None = None,
    ks: Sequence[int] = (1, 5, 10, 20),
    *,
    seed: int = 42,
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Split `interactions`, fit each model on the past and score it on the rest: one row each.

    `models` are registry names (default: item-kNN, EASE, ALS) or ready, unfitted models by
    label; random and popularity baselines are always added. `split` is "temporal" (one cut
    time, `test_fraction` of the rows after it), "leave_last_out" (each user's last
    interaction), "stratified" (each user's interactions at random with `seed`) or a `Split`.
    """
    from nextbuy.evaluation.runner import evaluate_models

    chosen = _split(interactions, split, test_fraction, seed)
    result = evaluate_models(
        chosen, _models(models), protocol=protocol, ks=ks, items=items, weights=weights
    )
    return result.table


def _models(models: Sequence[str] | Mapping[str, Recommender] | None) -> dict[str, Recommender]:
    from nextbuy.models import create_model

    if isinstance(models, Mapping):
        return dict(models)
    names = DEFAULT_MODELS if models is None else tuple(models)
    if isinstance(models, str):
        names = (models,)
    # EASE keeps a dense items × items matrix: on a large catalogue keep the popular part
    return {n: create_model(n, prune_items=True) if n == "ease" else create_model(n) for n in names}


def _split(
    interactions: pd.DataFrame, split: SplitName | Split, test_fraction: float, seed: int
) -> Split:
    from nextbuy.evaluation.splits import Split, leave_last_out, stratified_split, temporal_split

    if isinstance(split, Split):
        return split
    if split == "temporal":
        return temporal_split(interactions, test_fraction=test_fraction)
    if split == "leave_last_out":
        return leave_last_out(interactions)
    if split == "stratified":
        return stratified_split(interactions, test_fraction=test_fraction, seed=seed)
    raise ConfigError(
        f"split must be temporal, leave_last_out, stratified or a Split, got {split!r}"
    )
