"""A rule defined here and registered once is configured in nextbuy.toml like the built-in
ones, refused with a one-line message when misconfigured, and applied by the request path
that the API and the batch share (tests/test_batch.py shows they list the same items)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from nextbuy.config import Settings, load_settings
from nextbuy.datasets import load_sample_shop
from nextbuy.errors import ConfigError
from nextbuy.ingest import ImportOptions, import_frame
from nextbuy.rules import RequestContext, Rule, RuleConfigBase, register_rule, rule_types
from nextbuy.rules.base import Filter
from nextbuy.rules.catalog import ItemCatalog
from nextbuy.serving.batch import batch_lists
from nextbuy.store import open_store
from nextbuy.training import train_version

LINES = 30_000


@dataclass(frozen=True)
class EvenCodes(Filter):
    """Keeps items whose id ends in an even digit (or in `digits`): a rule no shop needs,
    easy to check in any list."""

    digits: tuple[str, ...] = ("0", "2", "4", "6", "8")
    name: str = "even_codes"

    def keep(self, ctx: RequestContext, items: np.ndarray, catalog: ItemCatalog) -> np.ndarray:
        ids = catalog.item_ids[items]
        return np.array([str(i)[-1:] in self.digits for i in ids], bool)


@register_rule
class EvenCodesConfig(RuleConfigBase):
    type: Literal["even_codes"] = "even_codes"
    digits: list[str] = Field(default_factory=lambda: ["0", "2", "4", "6", "8"], min_length=1)

    def build(self) -> Rule:
        return EvenCodes(tuple(self.digits))


CONFIG = """\
data_dir = "data"
[events.custom]
cancellation = 0.0
stock_adjustment = 0.0
[training]
model = "ease"
exclude_seen = true
[placements.even]
k = 6
rules = [{ type = "even_codes", digits = ["0", "2"] }, { type = "diversity", max_per_brand = 3 }]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("toy-rule")
    (root / "nextbuy.toml").write_text(CONFIG, encoding="utf-8")
    settings = load_settings(root / "nextbuy.toml")
    shop = load_sample_shop()
    events = shop.interactions.iloc[:LINES]
    items = shop.items[shop.items["item_id"].isin(set(events["item_id"]))]
    store = open_store(settings.store_path)
    try:
        for kind, frame in (("items", items), ("interactions", events)):
            import_frame(store, settings, frame, f"toy-rule:{kind}", ImportOptions(kind))
        train_version(settings, store)
    finally:
        store.close()
    return settings


def test_the_rule_is_configured_like_a_built_in_one(project: Settings) -> None:
    assert "even_codes" in rule_types()
    chain = project.placements["even"].build()
    assert isinstance(chain[0], EvenCodes) and chain[0].digits == ("0", "2")


def test_a_misconfigured_rule_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nextbuy.toml"
    path.write_text('[placements.p]\nrules = [{ type = "even_codes", digits = [] }]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "placements.p.rules.0" in message and "even_codes.digits" in message
    assert "\n" not in message


def test_the_request_path_keeps_to_the_rule(project: Settings) -> None:
    everyone = batch_lists(project, None, placement="even")
    assert len(everyone) > 0
    assert everyone["item_id"].astype(str).str[-1].isin(["0", "2"]).all()
    plain = batch_lists(project, None, k=6)  # the same users without the placement
    assert not plain["item_id"].astype(str).str[-1].isin(["0", "2"]).all()
