"""Build the bundled sample shop from the UCI Online Retail daily CSVs.

Reads ../shared/data/online-retail/raw/by-day/*.csv (every column as text, nothing parsed, so
the Parquet file holds the raw lines exactly) and writes one zstd-compressed Parquet file into
the package, plus its licence note. Run from the repository root:

    python scripts/build_sample.py [--raw DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RAW = REPO.parent / "shared" / "data" / "online-retail" / "raw" / "by-day"
OUT_DIR = REPO / "src" / "nextbuy" / "datasets" / "data"
PARQUET_NAME = "online_retail.parquet"
LICENSE_NAME = "ONLINE_RETAIL_LICENSE.md"
COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
EXPECTED_ROWS = 541_909

LICENSE_TEXT = """\
# Online Retail sample data — source and licence

`online_retail.parquet` holds all 541,909 invoice lines of the **"Online Retail"** dataset
of the UCI Machine Learning Repository, donated by Daqing Chen (2015),
DOI [10.24432/C5BW33](https://doi.org/10.24432/C5BW33).

Licence: **Creative Commons Attribution 4.0 International (CC BY 4.0)**,
<https://creativecommons.org/licenses/by/4.0/>. You may share and adapt it, also commercially,
provided you give appropriate credit, link the licence and indicate changes.

Citation: Daqing Chen, Sai Liang Sain, Kun Guo, *Data mining for the online retail industry: A
case study of RFM model-based customer segmentation using data mining*, Journal of Database
Marketing and Customer Strategy Management 19(3):197–208, 2012, doi:10.1057/dbm.2012.17.

## Changes made
- Taken from the CSV re-export of the dataset split by day in the
  `databricks/Spark-The-Definitive-Guide` repository, folder `data/retail-data/by-day`
  (305 files, commit 4ba5601eb9b9aed1d01ab79775e3af228216ff6f), not from UCI's Excel file.
  In that export `InvoiceDate` reads `YYYY-MM-DD HH:MM:SS` (UK wall-clock time, no zone) and
  `CustomerID` is a float string such as `17850.0`, empty where there is no customer.
- The daily files were concatenated in date order into one Parquet file (zstd), every column
  stored as the original text; no line was removed, reordered or edited.
- `nextbuy.datasets.load_sample_shop()` derives interactions, items and users from it at load time.
"""


def read_raw(raw_dir: Path) -> pd.DataFrame:
    """All daily files in file-name (= date) order, every value as the original string."""
    files = sorted(raw_dir.glob("*.csv"))
    if not files:
        raise SystemExit(f"{raw_dir}: no daily CSV files found")
    frames = [
        pd.read_csv(f, dtype=str, keep_default_na=False, encoding="utf-8")[COLUMNS] for f in files
    ]
    return pd.concat(frames, ignore_index=True)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(
        table,
        path,
        compression="zstd",
        compression_level=19,
        use_dictionary=True,
        row_group_size=len(frame),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="folder of daily CSVs")
    args = parser.parse_args()
    frame = read_raw(args.raw)
    if len(frame) != EXPECTED_ROWS:
        raise SystemExit(f"expected {EXPECTED_ROWS:,} lines, read {len(frame):,}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / PARQUET_NAME
    write_parquet(frame, out)
    (OUT_DIR / LICENSE_NAME).write_text(LICENSE_TEXT, encoding="utf-8")
    print(f"wrote {out} ({len(frame):,} lines, {out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
