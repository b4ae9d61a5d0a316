"""`python -m nextbuy.dashboard.audit_job STORE OUT`: the data audit, written as JSON.

Run by the dashboard in a child process, so a pass over millions of events never competes
with the server's requests for its interpreter lock.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from nextbuy.ingest.audit import audit
from nextbuy.store import open_store


def main(store_path: str, out: str) -> None:
    started = time.time()
    store = open_store(store_path)
    try:
        result = audit(store)
    finally:
        store.close()
    result["computed_at"] = time.time()
    result["seconds"] = round(time.time() - started, 2)
    target = Path(out)
    temp = target.with_suffix(".tmp")
    temp.write_text(json.dumps(result, default=str), encoding="utf-8")
    os.replace(temp, target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
