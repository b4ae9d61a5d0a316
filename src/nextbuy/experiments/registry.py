"""Where experiments live: nextbuy.toml's ``[[experiments]]`` and the store's ``experiments``.

Experiments created through the admin API or ``nextbuy experiment create`` are stored whole.
A configured experiment is defined by the file, but its life cycle (start, pause, stop) is
changed from the API or CLI, so those changes are stored too and override the file's
``status``/``started_at``/``stopped_at``. The merged list keeps the file's experiments first
(declaration order) and then the stored ones by creation time: that order fixes each
experiment's slice of its layer, so it must never change for existing experiments.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nextbuy.config.experiments import Action, ExperimentConfig, ExperimentsConfig, transition
from nextbuy.errors import ConfigError, NotFoundError
from nextbuy.store.records import open_experiment_table

LIFE_CYCLE_FIELDS = ("status", "started_at", "stopped_at")
SOURCE_CONFIG = "config"
SOURCE_STORE = "api"


def parse_experiment(data: dict[str, Any]) -> ExperimentConfig:
    """An experiment from a dict (API body, TOML table); ConfigError names the bad field."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "experiment"
        raise ConfigError(f"experiment: {where}: {first['msg']}") from None


class ExperimentRegistry:
    """Read, create and change experiments of one project (thread-safe: the store opens a
    connection per call)."""

    def __init__(self, store_path: Path, configured: Sequence[ExperimentConfig] = ()) -> None:
        self.store_path = Path(store_path)
        self.configured = list(configured)

    def _stored(self) -> list[tuple[str, dict[str, Any], str]]:
        rows = open_experiment_table(self.store_path).all()
        return [(name, json.loads(config), source) for name, config, source in rows]

    def all(self) -> list[ExperimentConfig]:
        """Every experiment, configured ones first, with stored life-cycle changes applied."""
        stored = {name: (config, source) for name, config, source in self._stored()}
        merged: list[ExperimentConfig] = []
        for experiment in self.configured:
            found = stored.pop(experiment.name, None)
            if found is not None:
                update = {k: found[0][k] for k in LIFE_CYCLE_FIELDS if k in found[0]}
                experiment = ExperimentConfig.model_validate({**experiment.model_dump(), **update})
            merged.append(experiment)
        merged += [ExperimentConfig.model_validate(config) for config, _ in stored.values()]
        return merged

    def get(self, name: str) -> ExperimentConfig:
        for experiment in self.all():
            if experiment.name == name:
                return experiment
        raise NotFoundError(f"experiment {name!r} does not exist")

    def create(self, experiment: ExperimentConfig) -> ExperimentConfig:
        """Store a new experiment; refuses a taken name or a layer it would over-book."""
        existing = self.all()
        if any(e.name == experiment.name for e in existing):
            raise ConfigError(f"experiment {experiment.name!r} already exists")
        try:
            ExperimentsConfig(experiments=[*existing, experiment])
        except ValidationError as exc:
            raise ConfigError(f"experiment {experiment.name!r}: {_message(exc)}") from None
        if experiment.status == "running" and experiment.started_at is None:
            experiment = experiment.model_copy(update={"started_at": datetime.now(UTC)})
        self._write(experiment, SOURCE_STORE, insert=True)
        return experiment

    def change(self, name: str, action: Action) -> ExperimentConfig:
        """Start, pause, resume or stop; the change is stored whatever the experiment's source."""
        experiment = transition(self.get(name), action)
        source = SOURCE_CONFIG if any(e.name == name for e in self.configured) else SOURCE_STORE
        self._write(experiment, source, insert=False)
        return experiment

    def _write(self, experiment: ExperimentConfig, source: str, insert: bool) -> None:
        table = open_experiment_table(self.store_path)
        now = int(time.time() * 1000)
        table.put(experiment.name, experiment.model_dump_json(), source, insert, now)


def _message(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
