"""Thin routers, one per resource: parse, call nextbuy.serving.recommend or the store, answer."""
