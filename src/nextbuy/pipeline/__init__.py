"""The request-time path: item catalogue, filter expressions and business rules.

Importing this package loads numpy and pydantic but not pandas, so the settings (which
hold the placements' rules) stay cheap to import.
"""

from nextbuy.pipeline.catalog import ItemCatalog
from nextbuy.pipeline.expression import compile_expression
from nextbuy.pipeline.rules import (
    DEFAULT_PLACEMENTS,
    Candidates,
    PlacementConfig,
    RequestContext,
    Rule,
    RuleConfig,
    apply_rules,
    build_rules,
)

__all__ = [
    "DEFAULT_PLACEMENTS",
    "Candidates",
    "ItemCatalog",
    "PlacementConfig",
    "RequestContext",
    "Rule",
    "RuleConfig",
    "apply_rules",
    "build_rules",
    "compile_expression",
]
