"""Recommenders behind one interface (`Recommender`), and a registry to build them by name.

```python
from nextbuy.models import create_model
model = create_model("ease", reg=300.0).fit(data)           # data: InteractionMatrix
top = model.recommend(data.rows(["u1"]), k=10, exclude=data.rows(["u1"]))
top.ids(model.item_ids)                                      # [["i7", "i3", ...]]
```
"""

from __future__ import annotations

from nextbuy.models.base import ModelFitError, Recommender, TopK, top_k
from nextbuy.models.blend import Blend, OwnHistory
from nextbuy.models.content_model import ContentModel
from nextbuy.models.ease import EASE
from nextbuy.models.fbt import FrequentlyBoughtTogether
from nextbuy.models.itemknn import ItemKNN
from nextbuy.models.mf import ALSModel, BPRModel
from nextbuy.models.popularity import CategoryBestsellers, PopularityModel, TrendingModel
from nextbuy.models.random_model import RandomModel
from nextbuy.models.registry import (
    available_models,
    create_model,
    known_model,
    model_class,
    register_model,
)

for _builtin in (
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
):
    register_model(_builtin)


__all__ = [
    "EASE",
    "ALSModel",
    "BPRModel",
    "CategoryBestsellers",
    "FrequentlyBoughtTogether",
    "ItemKNN",
    "ModelFitError",
    "PopularityModel",
    "RandomModel",
    "Recommender",
    "TopK",
    "TrendingModel",
    "available_models",
    "create_model",
    "known_model",
    "model_class",
    "register_model",
    "top_k",
]
