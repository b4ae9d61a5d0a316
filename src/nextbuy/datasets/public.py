"""Loaders for the public datasets kept in ../shared/data beside the repository.

Each reads the normalized CSV files of one folder (see that folder's README.md) into
import-ready frames. MovieLens is research-only and may not be redistributed, which is why
it is read from a path and never shipped in the package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nextbuy.datasets.shop import ShopData
from nextbuy.errors import NotFoundError

SHARED_DATA_ENV = "NEXTBUY_SHARED_DATA"

ML1M_AGE_GROUPS: dict[int, str] = {
    1: "Under 18",
    18: "18-24",
    25: "25-34",
    35: "35-44",
    45: "45-49",
    50: "50-55",
    56: "56+",
}
ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)


def shared_data_dir() -> Path | None:
    """The shared data folder: $NEXTBUY_SHARED_DATA, else `shared/data` beside an ancestor.

    Ancestors of the working directory are tried first, then those of this file, so a
    checkout at /work/main finds /work/shared/data. None when nothing is found.
    """
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        path = Path(configured).expanduser()
        return path.resolve() if path.is_dir() else None
    for start in (Path.cwd(), Path(__file__).parent):
        for folder in (start.resolve(), *start.resolve().parents):
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def dataset_dir(name: str, root: Path | str | None = None) -> Path:
    """The folder of dataset `name`: `root` itself if it holds the files, else `root/name`."""
    base = Path(root) if root is not None else shared_data_dir()
    if base is None:
        raise NotFoundError(
            f"dataset {name}: no shared data folder found (set {SHARED_DATA_ENV} or pass root)"
        )
    for folder in (base, base / name):
        if (folder / "interactions.csv").is_file():
            return folder
    raise NotFoundError(f"dataset {name}: no interactions.csv in {base} or {base / name}")


def _read(folder: Path, filename: str) -> pd.DataFrame:
    path = folder / filename
    if not path.is_file():
        raise NotFoundError(f"{path}: file not found")
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def _blank_to_none(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series != "", None)


def _unix_seconds(series: pd.Series) -> pd.Series:
    seconds = pd.to_numeric(series.replace("", None))
    return pd.to_datetime(seconds, unit="s", utc=True).astype("datetime64[ns, UTC]")


def _genres(joined: pd.Series) -> list[list[str]]:
    # MovieLens flags films without a known genre as "unknown": that is no genre at all.
    return [[g for g in s.split("|") if g and g != "unknown"] for s in joined]


def _movie_items(raw: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    genres = _genres(raw["genres"])
    attributes = [
        {"genres": g, **{k: v for k, v in zip(extra, values, strict=True) if v}}
        for g, values in zip(genres, raw[extra].itertuples(index=False), strict=True)
    ]
    return pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": raw["title"],
            "category": [g[0] if g else None for g in genres],
            "available": True,
            "attributes": attributes,
        }
    )


def load_movielens_100k(root: Path | str | None = None) -> ShopData:
    """MovieLens 100K: 100,000 ratings (1–5) by 943 users of 1,682 movies, with timestamps.

    Items: category = the first genre (None when only "unknown"), attributes = genres (list),
    release_date, video_release_date and imdb_url where given. Users: attributes age (int),
    gender, occupation, zip_code.
    """
    folder = dataset_dir("ml-100k", root)
    raw = _read(folder, "interactions.csv")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event_type": raw["event_type"],
            "timestamp": _unix_seconds(raw["timestamp"]),
            "value": raw["value"].astype(np.float64),
        }
    )
    items = _movie_items(
        _read(folder, "items.csv"), ["release_date", "video_release_date", "imdb_url"]
    )
    users_raw = _read(folder, "users.csv")
    users = pd.DataFrame(
        {
            "user_id": users_raw["user_id"],
            "attributes": [
                {"age": int(r.age), "gender": r.gender, "occupation": r.occupation, "zip_code": z}
                for r, z in zip(users_raw.itertuples(), users_raw["zip_code"], strict=True)
            ],
        }
    )
    return ShopData("ml-100k", interactions, items, users)


def load_movielens_1m(root: Path | str | None = None) -> ShopData:
    """MovieLens 1M as it exists here: which of 6,040 users rated which of 3,706 movies.

    The only copy available lost the rating values and the timestamps, so every event is the
    custom type "rated" (weight 1.0) with value missing and timestamp NaT: usable for implicit
    feedback with random splits, not for rating prediction or time-based splits. Items: all
    3,883 listed movies (category = first genre, attributes genres). Users: attributes gender,
    age and age_group (the release's age bucket), occupation (name), zip_code.
    """
    folder = dataset_dir("ml-1m", root)
    raw = _read(folder, "interactions.csv")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event_type": raw["event_type"],
            "timestamp": pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]"),
            "value": pd.to_numeric(raw["value"].replace("", None)).astype(np.float64),
        }
    )
    items = _movie_items(_read(folder, "items.csv"), [])
    users_raw = _read(folder, "users.csv")
    users = pd.DataFrame(
        {
            "user_id": users_raw["user_id"],
            "attributes": [_ml1m_user(r) for r in users_raw.itertuples()],
        }
    )
    return ShopData("ml-1m", interactions, items, users, custom_event_types={"rated": 1.0})


def _ml1m_user(row: Any) -> dict[str, object]:
    age = int(row.age)
    return {
        "gender": row.gender,
        "age": age,
        "age_group": ML1M_AGE_GROUPS.get(age),
        "occupation": ML1M_OCCUPATIONS[int(row.occupation)],
        "zip_code": row.zip_code,
    }


def load_online_retail(root: Path | str | None = None) -> ShopData:
    """UCI Online Retail, normalized: the 406,829 lines that name a customer.

    397,924 purchases and 8,905 cancellations (custom type, weight 0) by 4,372 customers of
    3,684 products. quantity = |Quantity|, value missing (the normalized file has no
    prices; use the bundled sample for revenue, sessions and guests); timestamp = invoice
    time read as UTC. Items: all 4,070 stock codes with title = description, price = median
    unit price, attributes {"service_code": True} for codes that do not start with a digit.
    """
    folder = dataset_dir("online-retail", root)
    raw = _read(folder, "interactions.csv")
    interactions = pd.DataFrame(
        {
            "user_id": raw["user_id"],
            "item_id": raw["item_id"],
            "event_type": raw["event_type"],
            "timestamp": _unix_seconds(raw["timestamp"]),
            "value": np.nan,
            "quantity": raw["value"].astype(np.float64).abs(),
        }
    )
    items_raw = _read(folder, "items.csv")
    description = _blank_to_none(items_raw["description"])
    items = pd.DataFrame(
        {
            "item_id": items_raw["item_id"],
            "title": description,
            "description": description,
            "category": None,
            "price": pd.to_numeric(items_raw["unit_price_median"].replace("", None)),
            "available": True,
            "attributes": [
                {"service_code": True} if s == "0" else {} for s in items_raw["starts_with_digit"]
            ],
        }
    )
    return ShopData(
        "online-retail", interactions, items, None, custom_event_types={"cancellation": 0.0}
    )
