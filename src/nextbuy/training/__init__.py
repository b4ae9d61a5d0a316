"""`nextbuy train`: choose (or take the configured model), validate, train, register, promote."""

from nextbuy.training.train import (
    TrainOutcome,
    read_interactions,
    train_version,
)

__all__ = [
    "TrainOutcome",
    "read_interactions",
    "train_version",
]
