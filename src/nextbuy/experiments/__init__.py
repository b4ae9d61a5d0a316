"""Experiments: configuration, assignment, statistics, bandit allocation, position bias.

Submodules are imported on use (``from nextbuy.experiments.stats import ...``) so that the
request path importing assignment does not pay for scipy and pandas.
"""

from nextbuy.config.experiments import (
    ExperimentConfig,
    ExperimentsConfig,
    VariantConfig,
    transition,
)
from nextbuy.experiments.assignment import Assignment, assign, assign_all, bucket

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
