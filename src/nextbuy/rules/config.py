"""Rule configuration as written in nextbuy.toml, the placements it builds, and the defaults."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from nextbuy.errors import ConfigError
from nextbuy.rules.base import Rule, normalise_path
from nextbuy.rules.boosts import BoostMargin, BoostNew
from nextbuy.rules.diversity import Diversity
from nextbuy.rules.expression import compile_expression
from nextbuy.rules.filters import (
    ExcludePurchased,
    ExcludeUnavailable,
    ExpressionFilter,
    PrefixFilter,
    PriceRange,
)
from nextbuy.rules.placing import Discovery, Promote


# -- configuration --------------------------------------------------------------------------
class RuleConfigBase(BaseModel):
    """A rule as written in nextbuy.toml: a `type` literal naming it, its settings, and
    `build` making the rule. Subclass it and `register_rule` the subclass to add a rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self) -> Rule:
        raise NotImplementedError


_RULE_TYPES: dict[str, type[RuleConfigBase]] = {}
R = TypeVar("R", bound=type[RuleConfigBase])


def register_rule(config: R) -> R:
    """Make a rule configurable by its `type` in every placement; a class decorator."""
    kind = config.model_fields["type"].default
    if not isinstance(kind, str):
        raise TypeError(f"{config.__name__} needs a `type` literal with a default")
    _RULE_TYPES[kind] = config
    return config


def rule_types() -> list[str]:
    return sorted(_RULE_TYPES)


def _rule_config(value: Any) -> RuleConfigBase:
    """A rule table from nextbuy.toml as the config of its registered type."""
    if isinstance(value, RuleConfigBase):
        return value
    known = ", ".join(rule_types())
    if not isinstance(value, Mapping) or "type" not in value:
        raise ValueError(f"a rule needs a type, one of {known}")
    config = _RULE_TYPES.get(str(value["type"]))
    if config is None:
        raise ValueError(f"unknown rule type {value['type']!r}; known: {known}")
    try:
        return config.model_validate(dict(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (value["type"], *first["loc"]))
        raise ValueError(f"{where}: {first['msg']}") from None


@register_rule
class ExcludePurchasedConfig(RuleConfigBase):
    """Leave out what the user bought within `days` (unset: ever). `when = "discovery"`
    applies it only while the served version shows what customers have not had yet: where
    `nextbuy train` found that customers buy again, its lists repeat purchases on purpose."""

    type: Literal["exclude_purchased"] = "exclude_purchased"
    days: float | None = Field(default=None, gt=0)
    when: Literal["always", "discovery"] = "always"

    def build(self) -> Rule:
        return ExcludePurchased(self.days, self.when)


@register_rule
class ExcludeUnavailableConfig(RuleConfigBase):
    """Leave out items the shop marks unavailable or holds no stock of."""

    type: Literal["exclude_unavailable"] = "exclude_unavailable"

    def build(self) -> Rule:
        return ExcludeUnavailable()


@register_rule
class CategoriesConfig(RuleConfigBase):
    """Keep only `include` paths (if any), then drop `exclude` ones.

    A name matches its path and everything below it: "Shoes" covers "Shoes > Running".
    """

    type: Literal["categories"] = "categories"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    def build(self) -> Rule:
        def paths(names: list[str]) -> tuple[str, ...]:
            return tuple(p for p in (normalise_path(n) for n in names) if p)

        return PrefixFilter("category", paths(self.include), paths(self.exclude), "categories")


@register_rule
class BrandsConfig(RuleConfigBase):
    """Keep only `include` brands (if any), then drop `exclude` ones; case is ignored."""

    type: Literal["brands"] = "brands"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)

    def build(self) -> Rule:
        def names(values: list[str]) -> tuple[str, ...]:
            return tuple(v.strip().casefold() for v in values if v.strip())

        return PrefixFilter("brand", names(self.include), names(self.exclude), "brands")


@register_rule
class PriceRangeConfig(RuleConfigBase):
    """Keep prices in [min, max]; items without a price go."""

    type: Literal["price_range"] = "price_range"
    min: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> PriceRangeConfig:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def build(self) -> Rule:
        return PriceRange(self.min, self.max)


@register_rule
class ExpressionConfig(RuleConfigBase):
    """Keep items for which `expression` holds (see nextbuy.rules.expression)."""

    type: Literal["expression"] = "expression"
    expression: str

    @field_validator("expression")
    @classmethod
    def _parses(cls, text: str) -> str:
        try:
            compile_expression(text)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return text

    def build(self) -> Rule:
        return ExpressionFilter(compile_expression(self.expression))


@register_rule
class BoostMarginConfig(RuleConfigBase):
    """score × (1 + weight × margin)."""

    type: Literal["boost_margin"] = "boost_margin"
    weight: float = 1.0

    def build(self) -> Rule:
        return BoostMargin(self.weight)


@register_rule
class BoostNewConfig(RuleConfigBase):
    """score × factor for items created within `days`."""

    type: Literal["boost_new"] = "boost_new"
    days: float = Field(default=14.0, gt=0)
    factor: float = Field(default=1.5, gt=0)

    def build(self) -> Rule:
        return BoostNew(self.days, self.factor)


@register_rule
class PromoteConfig(RuleConfigBase):
    """Up to `slots` of `items` at `positions` (1-based; default the top places)."""

    type: Literal["promote"] = "promote"
    items: list[str] = Field(min_length=1)
    slots: int = Field(default=1, ge=1)
    positions: list[Annotated[int, Field(ge=1)]] | None = None

    @model_validator(mode="after")
    def _enough_positions(self) -> PromoteConfig:
        if self.positions is not None and len(self.positions) < self.slots:
            raise ValueError(f"positions name {len(self.positions)} places for {self.slots} slots")
        return self

    def build(self) -> Rule:
        positions = None if self.positions is None else tuple(self.positions)
        return Promote(tuple(dict.fromkeys(self.items)), self.slots, positions)


@register_rule
class DiversityConfig(RuleConfigBase):
    """MMR re-ordering with a λ, and strict caps per category (`by`) and per brand."""

    type: Literal["diversity"] = "diversity"
    mmr_lambda: float = Field(default=0.7, ge=0, le=1)
    max_per_category: int | None = Field(default=None, ge=1)
    max_per_brand: int | None = Field(default=None, ge=1)
    by: Literal["category", "top_category"] = "top_category"

    def build(self) -> Rule:
        return Diversity(self.mmr_lambda, self.max_per_category, self.max_per_brand, self.by)


@register_rule
class DiscoveryConfig(RuleConfigBase):
    """A `share` of the k slots for categories outside the user's usual ones."""

    type: Literal["discovery"] = "discovery"
    share: float = Field(default=0.2, ge=0, le=1)
    by: Literal["category", "top_category"] = "top_category"

    def build(self) -> Rule:
        return Discovery(self.share, self.by)


# Any registered rule: validated by its `type`, dumped with all its fields.
RuleConfig = Annotated[SerializeAsAny[RuleConfigBase], BeforeValidator(_rule_config)]
_BOOSTS = ("boost_margin", "boost_new")


class PlacementConfig(BaseModel):
    """One placement (home page, product page, ...): list length, candidates, rules."""

    # Frozen: the defaults are shared between Settings objects.
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(default=10, ge=1, le=1000)
    candidates: int = Field(default=200, ge=1, le=100_000)
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> PlacementConfig:
        if self.candidates < self.k:
            raise ValueError(f"candidates ({self.candidates}) must be at least k ({self.k})")
        types = [rule.type for rule in self.rules]
        if "diversity" in types:
            late = [t for t in types[types.index("diversity") :] if t in _BOOSTS]
            if late:
                raise ValueError(f"{late[0]} after diversity would undo it; put boosts first")
        return self

    def build(self) -> list[Rule]:
        return build_rules(self.rules)


def build_rules(configs: Sequence[RuleConfig]) -> list[Rule]:
    """Rule objects for `configs`, in the same order; cheap, so a config reload rebuilds them."""
    return [config.build() for config in configs]


# Defaults per placement; a nextbuy.toml [placements.NAME] replaces that one placement only.
DEFAULT_PLACEMENTS: dict[str, PlacementConfig] = {
    # Personal picks on the home page: a mix of departments; nothing bought this month,
    # unless the shop's customers buy again (then the lists repeat purchases on purpose).
    "home": PlacementConfig(
        k=10,
        rules=[
            ExcludePurchasedConfig(days=30, when="discovery"),
            ExcludeUnavailableConfig(),
            DiversityConfig(mmr_lambda=0.7, max_per_category=3),
        ],
    ),
    # Similar and bought-together items: same category is the point, so cap brands only.
    "product_page": PlacementConfig(
        k=10,
        rules=[
            ExcludePurchasedConfig(days=30),
            ExcludeUnavailableConfig(),
            DiversityConfig(mmr_lambda=1.0, max_per_brand=4),
        ],
    ),
    # Cross-sell beside the basket: few slots, each from a different department.
    "cart": PlacementConfig(
        k=6,
        rules=[
            ExcludePurchasedConfig(days=7),
            ExcludeUnavailableConfig(),
            DiversityConfig(mmr_lambda=0.5, max_per_category=2, by="category"),
        ],
    ),
    # A newsletter read days later: news first, one discovery; nothing bought in a quarter,
    # unless the shop's customers buy again.
    "email": PlacementConfig(
        k=6,
        candidates=300,
        rules=[
            ExcludePurchasedConfig(days=90, when="discovery"),
            ExcludeUnavailableConfig(),
            BoostNewConfig(days=14, factor=1.2),
            DiversityConfig(mmr_lambda=0.6, max_per_category=2),
            DiscoveryConfig(share=0.2),
        ],
    ),
}


def with_default_placements(
    placements: Mapping[str, PlacementConfig],
) -> dict[str, PlacementConfig]:
    """The configured placements over the defaults, so configuring one keeps the others."""
    return {**DEFAULT_PLACEMENTS, **placements}
