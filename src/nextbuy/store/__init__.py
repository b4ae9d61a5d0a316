"""Where events, the catalog and user profiles are kept."""

from nextbuy.store.base import AppendResult, ErasureReport, Store, open_store

__all__ = ["AppendResult", "ErasureReport", "Store", "open_store"]
