"""One typed settings object, read from nextbuy.toml and NEXTBUY_* environment variables.

Precedence: environment (NEXTBUY_SECTION__KEY=...) over nextbuy.toml over defaults. Every
section forbids unknown keys so that a misspelt option fails loudly instead of being ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from nextbuy.config.experiments import ExperimentConfig, ExperimentsConfig
from nextbuy.data.schema import DEFAULT_EVENT_WEIGHTS, STANDARD_EVENT_TYPES
from nextbuy.errors import ConfigError
from nextbuy.rules import DEFAULT_PLACEMENTS, PlacementConfig, with_default_placements

CONFIG_FILENAME = "nextbuy.toml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventsConfig(Section):
    """Event vocabulary and how strongly each event type counts in training."""

    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    custom: dict[str, float] = Field(
        default_factory=dict, description="Extra event types this shop sends, with their weight."
    )
    # Event types whose quantity may be negative (returns, cancellations, stock corrections).
    negative_quantity_allowed: list[str] = Field(default_factory=list)
    rating_values: Literal["auto", "ignore", "scaled", "liked"] = Field(
        default="auto",
        description="How a rating's value scales its weight: ignore (every rating alike), "
        "scaled (value / top of the scale), liked (only above the scale's middle); auto: "
        "`nextbuy train` chooses on the validation window.",
    )
    rating_scale: tuple[float, float] | None = Field(
        default=None, description="Lowest and highest rating; unset: read from the data."
    )

    @field_validator("custom")
    @classmethod
    def _custom_names_are_new(cls, custom: dict[str, float]) -> dict[str, float]:
        clash = sorted(set(custom) & set(STANDARD_EVENT_TYPES))
        if clash:
            raise ValueError(f"custom event types repeat standard ones: {', '.join(clash)}")
        return custom

    def all_weights(self) -> dict[str, float]:
        return {**DEFAULT_EVENT_WEIGHTS, **self.weights, **self.custom}

    def known_types(self) -> set[str]:
        return set(self.all_weights())


class ImportConfig(Section):
    """Defaults for `nextbuy import`; command-line options override them."""

    # Per kind (interactions, items, users): nextbuy column -> column name in the shop's file.
    mappings: dict[str, dict[str, str]] = Field(default_factory=dict)
    time_format: str | None = Field(
        default=None, description="strptime format; when unset, unix s/ms or ISO 8601 are read."
    )
    batch_rows: int = Field(default=100_000, ge=1_000)


AUTO_MODEL = "auto"


class TrainingConfig(Section):
    half_life_days: float | None = Field(
        default=90.0,
        gt=0,
        description="Time decay of event weights; unset means no decay. Under the automatic "
        "choice this is where the search starts.",
    )
    model: str = Field(
        default=AUTO_MODEL,
        description="`auto`: `nextbuy train` chooses the model on the validation window; a "
        "model name pins that model.",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Hyper-parameters per model name (override tuning)."
    )
    budget: str = Field(
        default="auto",
        description="Time the automatic choice may search: 10m, 90s, 1h; auto scales it to "
        "the data (10 minutes for a million events).",
    )
    exclude_seen: bool | None = Field(
        default=None,
        description="Leave items a user already interacted with out of lists. Unset: decided "
        "from the data (repeat purchases in the validation window) by `nextbuy train`.",
    )
    repeat_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Lists may repeat earlier purchases when at least this share of the "
        "validation window's purchases were items the customer had before.",
    )
    validation: Literal["auto", "latest", "random"] = Field(
        default="auto",
        description="What `nextbuy train` validates on: the latest events (what customers do "
        "next), or a random share of each customer's events (what they like, whenever they "
        "said it); auto: random for shops with ratings only, else the latest.",
    )
    validation_fraction: float = Field(
        default=0.1, gt=0, lt=0.5, description="Latest share of events held out to validate."
    )
    promotion_metric: str = "ndcg@10"

    promotion_tolerance: float = Field(
        default=0.02, ge=0, description="A new version may be this much worse (relative)."
    )

    def excludes_seen(self, meta: Mapping[str, Any] | None = None) -> bool:
        """Whether lists leave out what a customer had: as configured when set, else as
        `nextbuy train` decided from the data (kept in the version's `meta`), else yes."""
        if self.exclude_seen is not None:
            return self.exclude_seen
        return bool((meta or {}).get("exclude_seen", True))


class ServingConfig(Section):
    """The REST API server (`nextbuy serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1_000_000, ge=1_024)
    candidates: int = Field(
        default=200, ge=10, le=5_000, description="Candidates per request ranked before rules."
    )
    events_batch_max: int = Field(default=1_000, ge=1)
    candidate_cache: int = Field(
        default=10_000,
        ge=0,
        description="Shoppers whose hybrid candidates are generated when their event arrives "
        "and kept for their next request (least recently active dropped first; 0: off).",
    )
    model_poll_seconds: float = Field(default=2.0, gt=0)
    new_arrival_days: float = Field(
        default=14.0, gt=0, description="Items created this recently count as new arrivals."
    )


class AttributionConfig(Section):
    """How outcomes are tied to served lists, and how often bandit shares are recomputed."""

    view_through_hours: float = Field(
        default=24.0,
        ge=0,
        description="A purchase of a recommended item this long after the list counts too.",
    )
    bandit_refresh_seconds: float = Field(
        default=60.0, gt=0, description="Thompson allocations are recomputed this often."
    )
    exposure_flush_seconds: float = Field(
        default=0.1, gt=0, le=10, description="Served lists reach the store within this."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="NEXTBUY_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("nextbuy-data")
    events: EventsConfig = Field(default_factory=EventsConfig)
    import_: ImportConfig = Field(default_factory=ImportConfig, alias="import")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    # Request-time rules per placement; a [placements.NAME] table replaces that one only.
    placements: dict[str, PlacementConfig] = Field(default_factory=lambda: dict(DEFAULT_PLACEMENTS))
    serving: ServingConfig = Field(default_factory=ServingConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    # [[experiments]] tables; admin-created ones live in the store and are merged with these.
    experiments: list[ExperimentConfig] = Field(default_factory=list)

    # Where the settings were read from; paths inside the file are relative to its folder.
    config_path: Path | None = Field(default=None, exclude=True)

    @field_validator("placements")
    @classmethod
    def _keep_default_placements(
        cls, placements: dict[str, PlacementConfig]
    ) -> dict[str, PlacementConfig]:
        return with_default_placements(placements)

    @field_validator("experiments")
    @classmethod
    def _experiments_fit_their_layers(
        cls, experiments: list[ExperimentConfig]
    ) -> list[ExperimentConfig]:
        ExperimentsConfig(experiments=experiments)  # names unique, layers not over-booked
        return experiments

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs, so the environment must rank above them.
        return (env_settings, init_settings)

    @property
    def store_path(self) -> Path:
        return self.data_dir / "nextbuy.db"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def rejects_dir(self) -> Path:
        return self.data_dir / "rejects"


def find_config(start: Path | None = None) -> Path | None:
    """The nearest nextbuy.toml in this folder or a parent, as git finds its repository."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
    return None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from `path` (or the nearest nextbuy.toml, or defaults) and the environment."""
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    path = path or find_config()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path or 'settings'}: {where}: {message}") from None
    if path is not None:
        settings.config_path = path.resolve()
        if not settings.data_dir.is_absolute():
            settings.data_dir = path.resolve().parent / settings.data_dir
    return settings
