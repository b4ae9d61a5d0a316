"""Experiments: configuration, assignment, statistics, bandit allocation, position bias.

Submodules are imported on use (``from nextbuy.experiments.stats import ...``) so that the
request path importing assignment does not pay for scipy and pandas.
"""

from nextbuy.experiments.assignment import Assignment, assign, assign_all, bucket
from nextbuy.experiments.config import (
    ExperimentConfig,
    ExperimentsConfig,
    VariantConfig,
    transition,
)

__all__ = [
    "Assignment",
    "ExperimentConfig",
    "ExperimentsConfig",
    "VariantConfig",
    "assign",
    "assign_all",
    "bucket",
    "transition",
]
