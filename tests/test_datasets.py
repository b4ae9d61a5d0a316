"""The bundled sample shop and the loaders of the real datasets in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from nextbuy.data.schema import STANDARD_EVENT_TYPES
from nextbuy.datasets import (
    ShopData,
    load_movielens_1m,
    load_movielens_100k,
    load_online_retail,
    load_sample_shop,
    shared_data_dir,
)
from nextbuy.datasets.public import SHARED_DATA_ENV
from nextbuy.errors import NotFoundError

DATA_DIR = Path(__file__).resolve().parent.parent / "src" / "nextbuy" / "datasets" / "data"
SHARED_MISSING = "../shared/data not found beside the repository"
needs_shared = pytest.mark.skipif(shared_data_dir() is None, reason=SHARED_MISSING)


@pytest.fixture(scope="module")
def sample() -> ShopData:
    return load_sample_shop()


def _used_types_are_declared(data: ShopData) -> None:
    used = set(data.interactions["event_type"].unique())
    assert used <= set(STANDARD_EVENT_TYPES) | set(data.custom_event_types)


# -- bundled sample -----------------------------------------------------------------------
def test_bundled_parquet_holds_every_raw_line_and_its_licence() -> None:
    parquet = pq.ParquetFile(DATA_DIR / "online_retail.parquet")
    assert parquet.metadata.num_rows == 541_909
    assert parquet.schema_arrow.names == [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ]
    licence = (DATA_DIR / "ONLINE_RETAIL_LICENSE.md").read_text(encoding="utf-8")
    for credit in ("CC BY 4.0", "10.24432/C5BW33", "Daqing Chen", "Spark-The-Definitive-Guide"):
        assert credit in licence


def test_sample_keeps_every_line_but_the_three_adjustments(sample: ShopData) -> None:
    inter = sample.interactions
    assert len(inter) == 541_909 - 3
    assert not inter["order_id"].str.startswith("A").any()
    assert inter["event_type"].value_counts().to_dict() == {
        "purchase": 531_282,
        "cancellation": 9_288,
        "stock_adjustment": 1_336,
    }
    assert inter["event_id"].is_unique
    _used_types_are_declared(sample)
    assert sample.custom_event_types["cancellation"] == 0.0


def test_sample_guests_are_anonymous_sessions(sample: ShopData) -> None:
    inter = sample.interactions
    guests = inter["user_id"].isna()
    assert guests.sum() == 135_080 - 3
    assert inter["user_id"].nunique() == 4_372
    assert (inter["session_id"] == "inv-" + inter["order_id"]).all()
    assert inter["session_id"].nunique() == 25_900 - 3
    # The customer lines are exactly those of the normalized Online Retail file.
    assert (~guests).sum() == 406_829
    assert inter.loc[~guests, "user_id"].str.fullmatch(r"\d+").all()


def test_sample_values_times_and_context(sample: ShopData) -> None:
    inter = sample.interactions
    assert str(inter["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert inter["timestamp"].min() == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    assert inter["timestamp"].max() == pd.Timestamp("2011-12-09 12:50", tz="UTC")
    assert (inter["quantity"] >= 0).all()
    assert (inter["value"] >= 0).all()
    first = inter.iloc[0]
    assert (first["user_id"], first["item_id"], first["quantity"]) == ("17850", "85123A", 6.0)
    assert first["value"] == pytest.approx(6 * 2.55)
    assert first["context"] == {"country": "United Kingdom"}
    countries = inter["context"].map(lambda c: c["country"])
    assert countries.nunique() == 38
    assert (countries == "United Kingdom").sum() == 495_478 - 3


def test_sample_items(sample: ShopData) -> None:
    items = sample.items
    assert items is not None
    assert items["item_id"].is_unique
    # Every code of the source but B, which only occurs on the dropped adjustment lines.
    assert len(items) == 4_070 - 1
    assert set(items["item_id"]) == set(sample.interactions["item_id"])
    assert items["title"].isna().sum() == 112
    assert items["category"].isna().all()
    service = items.loc[items["attributes"].map(bool), "item_id"]
    assert len(service) == 32
    assert {"POST", "DOT", "M", "AMAZONFEE"} <= set(service)
    assert not service.str[0].str.isdigit().any()
    heart = items.set_index("item_id").loc["85123A"]
    assert heart["title"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert heart["price"] == pytest.approx(2.95)
    assert (items["price"].dropna() > 0).all()


def test_sample_users(sample: ShopData) -> None:
    users = sample.users
    assert users is not None
    assert len(users) == 4_372
    assert users["user_id"].is_unique
    countries = users["attributes"].map(lambda a: a["country"])
    assert countries.value_counts().index[0] == "United Kingdom"
    by_user = users.set_index("user_id")["attributes"]
    assert by_user["12583"] == {"country": "France"}


# -- shared data folder -------------------------------------------------------------------
def test_shared_data_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "absent"))
    assert shared_data_dir() is None


def test_shared_data_dir_is_found_beside_an_ancestor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shared" / "data").mkdir(parents=True)
    work = tmp_path / "checkout" / "deep"
    work.mkdir(parents=True)
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    monkeypatch.chdir(work)
    assert shared_data_dir() == (tmp_path / "shared" / "data").resolve()


@pytest.mark.parametrize("loader", [load_movielens_100k, load_movielens_1m, load_online_retail])
def test_missing_dataset_folder_is_a_one_line_not_found(loader, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as caught:
        loader(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path) in message


# -- real datasets ------------------------------------------------------------------------
@pytest.mark.shared
@needs_shared
def test_movielens_100k_matches_its_readme() -> None:
    data = load_movielens_100k()
    inter = data.interactions
    assert len(inter) == 100_000
    assert inter["user_id"].nunique() == 943
    assert inter["item_id"].nunique() == 1_682
    assert (inter["event_type"] == "rating").all()
    assert inter["value"].value_counts().sort_index().tolist() == [
        6_110,
        11_370,
        27_145,
        34_174,
        21_201,
    ]
    assert inter["timestamp"].min() == pd.Timestamp("1997-09-20 03:05:10", tz="UTC")
    assert inter["timestamp"].max() == pd.Timestamp("1998-04-22 23:10:38", tz="UTC")
    assert inter.groupby("user_id").size().min() >= 20
    items = data.items.set_index("item_id")
    assert len(items) == 1_682
    assert items.loc["1", "category"] == "Animation"
    assert items.loc["1", "attributes"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert pd.isna(items.loc["267", "category"])  # MovieLens flags it "unknown"
    users = data.users.set_index("user_id")
    assert len(users) == 943
    assert users.loc["1", "attributes"] == {
        "age": 24,
        "gender": "M",
        "occupation": "technician",
        "zip_code": "85711",
    }
    _used_types_are_declared(data)


@pytest.mark.shared
@needs_shared
def test_movielens_1m_matches_its_readme() -> None:
    data = load_movielens_1m()
    inter = data.interactions
    assert len(inter) == 1_000_209
    assert inter["user_id"].nunique() == 6_040
    assert inter["item_id"].nunique() == 3_706
    assert not inter.duplicated(["user_id", "item_id"]).any()
    # This copy lost rating values and times: they must read as missing, not as zeros.
    assert inter["timestamp"].isna().all()
    assert inter["value"].isna().all()
    assert data.custom_event_types == {"rated": 1.0}
    assert inter.head(5)["item_id"].tolist() == ["1193", "661", "914", "3408", "2355"]
    assert len(data.items) == 3_883
    assert set(inter["item_id"]) <= set(data.items["item_id"])
    users = data.users.set_index("user_id")
    assert len(users) == 6_040
    assert users.loc["1", "attributes"]["occupation"] == "K-12 student"
    assert users.loc["1", "attributes"]["age_group"] == "Under 18"
    _used_types_are_declared(data)


@pytest.mark.shared
@needs_shared
def test_online_retail_matches_its_readme() -> None:
    data = load_online_retail()
    inter = data.interactions
    assert len(inter) == 406_829
    assert inter["event_type"].value_counts().to_dict() == {
        "purchase": 397_924,
        "cancellation": 8_905,
    }
    assert inter["user_id"].nunique() == 4_372
    assert inter["item_id"].nunique() == 3_684
    bought = inter[inter["event_type"] == "purchase"]
    assert bought["user_id"].nunique() == 4_339
    assert len(bought.drop_duplicates(["user_id", "item_id"])) == 266_802
    assert (inter["quantity"] >= 0).all()
    assert inter["value"].isna().all()
    items = data.items
    assert len(items) == 4_070
    assert items["title"].isna().sum() == 112
    assert items["attributes"].map(bool).sum() == 33
    _used_types_are_declared(data)


@pytest.mark.shared
@needs_shared
def test_sample_agrees_with_the_normalized_online_retail(sample: ShopData) -> None:
    retail = load_online_retail()
    normalized = retail.interactions
    customers = sample.interactions[sample.interactions["user_id"].notna()]
    columns = ["user_id", "item_id", "event_type", "timestamp", "quantity"]
    left = customers[columns].reset_index(drop=True).astype({"user_id": str, "item_id": str})
    right = normalized[columns].astype({"user_id": str, "item_id": str})
    pd.testing.assert_frame_equal(left, right, check_dtype=False)
    assert set(sample.items["item_id"]) == set(retail.items["item_id"]) - {"B"}
