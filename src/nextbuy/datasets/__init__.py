"""Data to try and test nextbuy on: the bundled sample shop, public datasets, a synthetic shop."""

from nextbuy.datasets.public import (
    load_movielens_1m,
    load_movielens_100k,
    load_online_retail,
    shared_data_dir,
)
from nextbuy.datasets.sample import load_sample_shop
from nextbuy.datasets.shop import ShopData
from nextbuy.datasets.synthetic import GroundTruth, SyntheticShop

__all__ = [
    "GroundTruth",
    "ShopData",
    "SyntheticShop",
    "load_movielens_1m",
    "load_movielens_100k",
    "load_online_retail",
    "load_sample_shop",
    "shared_data_dir",
]
