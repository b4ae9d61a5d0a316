"""One hierarchy of errors a user can cause; the CLI and the API map them to messages."""

from __future__ import annotations


class NextbuyError(Exception):
    """Base of every error nextbuy raises on purpose; its message is one line for the user."""


class ConfigError(NextbuyError):
    """The configuration file or environment holds something invalid."""


class DataError(NextbuyError):
    """Input data cannot be read as the caller said it would be."""


class NotFoundError(NextbuyError):
    """A named user, item, model or file does not exist."""


class NotFittedError(NextbuyError):
    """A model or engine was used before it was trained or loaded."""


class StoreError(NextbuyError):
    """The store could not complete an operation."""


class ImportInterrupted(NextbuyError):
    """An import was cancelled; the store was left as it was before it started."""
