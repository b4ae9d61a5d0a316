"""Models by name: the built-in ones register when `nextbuy.models` is imported; others
(the hybrid pipeline, a shop's own model) through the ``nextbuy.models`` entry-point group or
`register_model`, so adding a model never means editing the callers that build one by name.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from nextbuy.errors import ConfigError

if TYPE_CHECKING:
    from nextbuy.models.base import Recommender

ENTRY_POINT_GROUP = "nextbuy.models"

_REGISTERED: dict[str, type[Recommender]] = {}
_plugins_loaded = False


def register_model(cls: type[Recommender]) -> type[Recommender]:
    """Make `cls` buildable and loadable by its `name`; usable as a class decorator."""
    _REGISTERED[cls.name] = cls
    return cls


def available_models() -> dict[str, type[Recommender]]:
    """Every model by name, plugins included."""
    _load_plugins()
    return dict(_REGISTERED)


def model_class(name: str) -> type[Recommender] | None:
    if name not in _REGISTERED:
        _load_plugins()
    return _REGISTERED.get(name)


def known_model(name: str) -> type[Recommender]:
    """The class registered as `name`; a ConfigError naming the known ones otherwise."""
    cls = model_class(name)
    if cls is None:
        known = ", ".join(sorted(available_models()))
        raise ConfigError(f"unknown model {name!r}; known: {known}")
    return cls


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model by registry name with these hyper-parameters."""
    cls = known_model(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTERED:
            register_model(entry.load())
