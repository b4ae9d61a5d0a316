"""The bundled sample shop: UCI Online Retail (CC BY 4.0), all 541,909 invoice lines.

The raw lines ship as `data/online_retail.parquet` (built by scripts/build_sample.py, credited
in `data/ONLINE_RETAIL_LICENSE.md`); this module turns them into import-ready frames.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from nextbuy.datasets.shop import ShopData

SAMPLE_NAME = "online-retail-sample"
PARQUET_NAME = "online_retail.parquet"
CANCELLATION = "cancellation"
STOCK_ADJUSTMENT = "stock_adjustment"
# Neither a cancellation nor a stock write-off says the customer wants the product.
SAMPLE_CUSTOM_EVENT_TYPES: dict[str, float] = {CANCELLATION: 0.0, STOCK_ADJUSTMENT: 0.0}


def read_raw_sample() -> pd.DataFrame:
    """The raw invoice lines exactly as in the source CSVs, every column as text."""
    source = resources.files("nextbuy.datasets").joinpath("data", PARQUET_NAME)
    with resources.as_file(source) as path:
        return pd.read_parquet(path)


def load_sample_shop() -> ShopData:
    """Online Retail as interactions, items and users, keeping every line but three.

    Interactions, one per invoice line, in the source's (chronological) order:

    - user_id: CustomerID as an integer string; missing for the 135,077 guest lines, which
      stay in as anonymous sessions (session_id = "inv-" + InvoiceNo on every line).
    - event_type: "purchase"; "cancellation" on "C" invoices; "stock_adjustment" for the 1,336
      lines of ordinary invoices with a negative quantity, no customer and price 0 (stock
      written off as damaged, lost, ...), which are not sales. Both are custom types of weight 0.
    - quantity: |Quantity|; value: revenue |Quantity| * UnitPrice; timestamp: InvoiceDate (UK
      wall-clock time, no zone in the source) read as UTC; context: {"country": Country}.
    - event_id: "or-<line number>", so that the 5,268 exact duplicate lines of the source stay
      distinct events and a second import of the sample stores nothing twice.

    Dropped: the 3 lines of "A" invoices ("Adjust bad debt", stock code B), which are
    accounting entries, not anything a customer did; so B is not among the 4,069 items.

    Items: every stock code of the kept lines; title = description = the most frequent
    non-empty stripped Description (None for 112 codes that have none); price = median
    UnitPrice over non-cancelled lines with UnitPrice > 0 (None for 148 codes); no category
    exists in the source; attributes {"service_code": True} for the 32 codes that do not start
    with a digit (postage, fees, vouchers, ...). Users: the 4,372 customers with
    attributes {"country": their most frequent country}.
    """
    raw = read_raw_sample()
    raw["line"] = np.arange(len(raw))
    raw = raw[~raw["InvoiceNo"].str.startswith("A")].reset_index(drop=True)
    return ShopData(
        name=SAMPLE_NAME,
        interactions=_interactions(raw),
        items=_items(raw),
        users=_users(raw),
        custom_event_types=dict(SAMPLE_CUSTOM_EVENT_TYPES),
    )


def _customer_ids(raw: pd.DataFrame) -> pd.Series:
    """'17850.0' -> '17850'; empty -> missing."""
    ids = pd.to_numeric(raw["CustomerID"].replace("", None))
    return ids.astype("Int64").astype("string").astype(object).where(ids.notna(), None)


def _event_types(invoice: pd.Series, quantity: pd.Series, customer: pd.Series) -> np.ndarray:
    cancelled = invoice.str.startswith("C").to_numpy()
    written_off = (~cancelled) & (quantity < 0).to_numpy() & customer.isna().to_numpy()
    return np.select(
        [cancelled, written_off], [CANCELLATION, STOCK_ADJUSTMENT], default="purchase"
    ).astype(object)


def _interactions(raw: pd.DataFrame) -> pd.DataFrame:
    quantity = raw["Quantity"].astype(np.int64)
    price = raw["UnitPrice"].astype(np.float64)
    user_id = _customer_ids(raw)
    amount = quantity.abs().astype(np.float64)
    return pd.DataFrame(
        {
            "user_id": user_id,
            "item_id": raw["StockCode"],
            "event_type": _event_types(raw["InvoiceNo"], quantity, user_id),
            "timestamp": _utc(raw["InvoiceDate"]),
            "value": amount * price,
            "quantity": amount,
            "session_id": "inv-" + raw["InvoiceNo"],
            "order_id": raw["InvoiceNo"],
            "context": [{"country": c} for c in raw["Country"]],
            "event_id": "or-" + raw["line"].astype(str),
        }
    )


def _utc(wall_clock: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(wall_clock, format="%Y-%m-%d %H:%M:%S", utc=True)
    return stamps.astype("datetime64[ns, UTC]")


def _most_frequent(keys: pd.Series, values: pd.Series) -> pd.Series:
    """Per key, the most frequent value; ties go to the value seen first."""
    frame = pd.DataFrame({"key": keys, "value": values, "pos": np.arange(len(keys))})
    stats = frame.groupby(["key", "value"], sort=False).agg(n=("pos", "size"), first=("pos", "min"))
    stats = stats.reset_index().sort_values(["n", "first"], ascending=[False, True])
    return stats.drop_duplicates("key").set_index("key")["value"]


def _items(raw: pd.DataFrame) -> pd.DataFrame:
    codes = pd.Index(raw["StockCode"].unique(), name="item_id")
    text = raw["Description"].str.strip()
    has_text = text != ""
    title = _most_frequent(raw["StockCode"][has_text], text[has_text]).reindex(codes)
    price = raw["UnitPrice"].astype(np.float64)
    sold = ~raw["InvoiceNo"].str.startswith("C") & (price > 0)
    median_price = price[sold].groupby(raw["StockCode"][sold]).median().reindex(codes)
    service = ~codes.str[0].str.isdigit()
    title = title.astype(object).where(title.notna(), None)
    return pd.DataFrame(
        {
            "item_id": codes,
            "title": title.to_numpy(),
            "description": title.to_numpy(),
            "category": None,
            "price": median_price.to_numpy(),
            "available": True,
            "attributes": [{"service_code": True} if s else {} for s in service],
        }
    )


def _users(raw: pd.DataFrame) -> pd.DataFrame:
    known = raw["CustomerID"] != ""
    customer = _customer_ids(raw[known])
    country = _most_frequent(customer, raw.loc[known, "Country"])
    order = customer.drop_duplicates()
    country = country.reindex(order)
    return pd.DataFrame(
        {
            "user_id": order.to_numpy(),
            "attributes": [{"country": c} for c in country],
        }
    )
