"""Request-time business rules: filters, boosts, promotions, diversity and discovery slots.

Rules are configured per placement in nextbuy.toml and built into plain objects, so a new
config applies to the next request without retraining or a restart. Everything works on
numpy arrays of candidate indices; only MMR (over at most MMR_POOL items) and the final
assembly of the k results loop in Python.

Order semantics of `apply_rules`:
- Filters hold everywhere, wherever they are written: they are combined into one mask that
  removes candidates before any other rule runs and vets every item `promote` brings in,
  so a filter written after `promote` still applies. Built-in rules only re-order or bring
  in vetted items; if the chain holds a rule of another kind, the mask is checked again on
  the final list.
- The other rules run in the order written. Boosts re-sort by score, so write them before
  `diversity` (PlacementConfig refuses a boost after diversity, which would undo it).
- `promote` and `discovery` pin the items they place: later boosts and diversity re-order
  the other items around them.
- The caps of every `diversity` rule (max_per_category, max_per_brand) also hold on the
  final list, placed items included; items without a category or brand are never capped.
"""

from nextbuy.rules.apply import apply_rules
from nextbuy.rules.base import Candidates, RequestContext, Rule
from nextbuy.rules.catalog import ItemCatalog
from nextbuy.rules.config import (
    DEFAULT_PLACEMENTS,
    PlacementConfig,
    RuleConfig,
    RuleConfigBase,
    build_rules,
    register_rule,
    rule_types,
    with_default_placements,
)
from nextbuy.rules.expression import compile_expression

__all__ = [
    "DEFAULT_PLACEMENTS",
    "Candidates",
    "ItemCatalog",
    "PlacementConfig",
    "RequestContext",
    "Rule",
    "RuleConfig",
    "RuleConfigBase",
    "apply_rules",
    "build_rules",
    "compile_expression",
    "register_rule",
    "rule_types",
    "with_default_placements",
]
