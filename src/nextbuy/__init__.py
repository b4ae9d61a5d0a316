"""nextbuy: a self-hosted product recommendation engine."""

__version__ = "0.1.0"
