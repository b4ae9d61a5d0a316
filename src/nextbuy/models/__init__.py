"""Recommenders behind one interface (`Recommender`), and a registry to build them by name.

```python
from nextbuy.models import create_model
model = create_model("ease", reg=300.0).fit(data)           # data: InteractionMatrix
top = model.recommend(data.rows(["u1"]), k=10, exclude=data.rows(["u1"]))
top.ids(model.item_ids)                                      # [["i7", "i3", ...]]
```
"""

from __future__ import annotations

from typing import Any

from nextbuy.errors import ConfigError
from nextbuy.models.base import ModelFitError, Recommender, TopK, top_k
from nextbuy.models.blend import Blend, OwnHistory
from nextbuy.models.content_model import ContentModel
from nextbuy.models.ease import EASE
from nextbuy.models.fbt import FrequentlyBoughtTogether
from nextbuy.models.hybrid_model import HybridModel
from nextbuy.models.itemknn import ItemKNN
from nextbuy.models.mf import ALSModel, BPRModel
from nextbuy.models.popularity import CategoryBestsellers, PopularityModel, TrendingModel
from nextbuy.models.random_model import RandomModel

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        PopularityModel,
        TrendingModel,
        CategoryBestsellers,
        ItemKNN,
        FrequentlyBoughtTogether,
        EASE,
        ALSModel,
        BPRModel,
        RandomModel,
        Blend,
        OwnHistory,
        ContentModel,
        HybridModel,
    )
}


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model by registry name with these hyper-parameters."""
    cls = MODELS.get(name)
    if cls is None:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


__all__ = [
    "EASE",
    "MODELS",
    "ALSModel",
    "BPRModel",
    "CategoryBestsellers",
    "FrequentlyBoughtTogether",
    "HybridModel",
    "ItemKNN",
    "ModelFitError",
    "PopularityModel",
    "RandomModel",
    "Recommender",
    "TopK",
    "TrendingModel",
    "create_model",
    "top_k",
]
