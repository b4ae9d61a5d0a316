"""Model quality: offline metrics per version, beyond-accuracy of the lists in service, drift.

Beyond-accuracy figures are measured on the serving model's precomputed top lists (what
every trained customer would be shown before rules), once per model version. Drift compares
what is recommended (the latest shown lists of the exposure log, or those top lists when
nothing has been served yet) with what is bought (the latest purchases), share by share
per category; a catalogue without categories is grouped by price band instead, so the
comparison still means something.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nextbuy.evaluation.leaderboard import leaderboard_rows, other_protocol
from nextbuy.evaluation.metrics import (
    catalog_coverage,
    intra_list_diversity,
    novelty,
    popularity_bias,
)
from nextbuy.serving.live import Live
from nextbuy.store.dashboard_reads import DashboardReads
from nextbuy.store.registry import ModelRegistry

LIST_K = 10
HEADLINE_METRICS = ("ndcg@10", "recall@10", "precision@10", "hit_rate@10", "coverage@10")
PRICE_BANDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
RECENT_LISTS = 20_000
RECENT_PURCHASES = 50_000


def version_history(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Every registered version, oldest first, with its validation metrics."""
    serving = registry.serving_state().get("version")
    return [
        {
            "version": v.name,
            "model": v.meta.get("model"),
            "trained_at": v.meta.get("trained_at"),
            "events": v.meta.get("events"),
            "serving": v.name == serving,
            "metrics": {k: _finite(v.metrics.get(k)) for k in HEADLINE_METRICS},
        }
        for v in registry.versions()
    ]


def evaluation_summary(reports_dir: Path) -> dict[str, Any] | None:
    """The latest offline evaluation report's per-model table, if one was written."""
    path = reports_dir / "evaluation.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = [
        {
            "model": row.get("model"),
            "baseline": bool(row.get("baseline")),
            "metrics": {k: _finite(row.get(k)) for k in (*HEADLINE_METRICS, "popularity_bias")},
        }
        for row in data.get("table", [])
    ]
    return {"protocol": data.get("protocol"), "path": str(path), "models": rows}


CHOICE_ROWS = 15


def choice_summary(registry: ModelRegistry) -> dict[str, Any] | None:
    """How `nextbuy train` chose the version in service: its verdict, what it decided about
    the data and the head of its leaderboard (None for versions trained before the choice)."""
    serving = registry.serving()
    choice = None if serving is None else serving.meta.get("choice")
    if not choice:
        return None
    rows = [
        {
            "rank": row["rank"],
            "model": row["model"],
            "matrix": row["matrix"],
            "stage": row["stage"],
            "baseline": row["baseline"],
            "chosen": row["chosen"],
            "ndcg": _finite(row["ndcg@10"]),
            "other_ndcg": _finite(row["other"]),
            "recall": _finite(row["recall@10"]),
            "coverage": _finite(row["coverage@10"]),
            "fit_seconds": _finite(row["fit_seconds"]),
        }
        for row in leaderboard_rows(choice, CHOICE_ROWS)
    ]
    return {
        "version": serving.name,  # type: ignore[union-attr]
        "verdict": choice["verdict"],
        "protocol": choice["protocol"],
        "other_protocol": other_protocol(choice),
        "lists": choice["protocol_reason"],
        "validation": choice.get("validation_reason", ""),
        "notes": list(choice.get("notes", [])),
        "candidates": len(choice["trials"]),
        "seconds": choice["seconds"],
        "budget_seconds": choice["budget_seconds"],
        "rows": rows,
    }


# -- grouping items: category, or price band without categories ------------------------------
@dataclass(frozen=True)
class Grouping:
    kind: str  # "category" or "price band"
    labels: np.ndarray  # object, per catalogue index


def grouping(live: Live) -> Grouping:
    catalog = live.catalog
    top = catalog.top_category
    if any(value is not None for value in top):
        labels = np.asarray([v if v is not None else "(no category)" for v in top], object)
        return Grouping("category", labels)
    return Grouping("price band", np.asarray([price_band(p) for p in catalog.price], object))


def price_band(price: float) -> str:
    if price is None or not math.isfinite(price):
        return "(no price)"
    low = 0.0
    for high in PRICE_BANDS:
        if price < high:
            return f"{low:g}–{high:g}"
        low = high
    return f"{low:g}+"


# -- beyond accuracy of the lists in service ---------------------------------------------------
def beyond_accuracy(live: Live) -> dict[str, Any]:
    """Coverage, diversity, popularity bias and novelty of the serving model's top lists."""
    model = live.model
    top = np.asarray(model.top_items[:, :LIST_K], np.int64)
    shown = top[(top >= 0).any(axis=1)]
    groups = grouping(live)
    if not len(shown):
        return {"users": 0, "grouping": groups.kind}
    codes = _codes(groups.labels[: model.n_items])
    return {
        "users": len(shown),
        "k": LIST_K,
        "grouping": groups.kind,
        "catalog_coverage": catalog_coverage(shown, model.n_items),
        "diversity": _finite(intra_list_diversity(shown, item_categories=codes)),
        "popularity_bias": _finite(popularity_bias(shown, model.popularity)),
        "novelty": _finite(novelty(shown, model.popularity)),
    }


def _codes(labels: np.ndarray) -> np.ndarray:
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    return codes


# -- drift: recommended against bought ---------------------------------------------------------
def drift(live: Live, reads: DashboardReads, purchases_since_ms: int = 0) -> dict[str, Any]:
    """Share per group of recommended items against purchased items, and their distance.

    Purchases are the latest RECENT_PURCHASES at or after `purchases_since_ms` (a bound that
    keeps the index walk short where purchases are a small share of the events)."""
    groups = grouping(live)
    index = live.catalog.index
    shown = reads.exposed_item_counts(RECENT_LISTS)
    bought_rows = reads.purchased_item_counts(purchases_since_ms, RECENT_PURCHASES)
    source = "latest shown lists"
    if not shown:
        source = "the model's top lists (nothing served yet)"
        top = live.model.top_items[:, :LIST_K]
        items, counts = np.unique(top[top >= 0], return_counts=True)
        shown = {str(live.catalog.item_ids[i]): int(c) for i, c in zip(items, counts, strict=True)}
    bought = {str(r[0]): int(r[1]) for r in bought_rows}
    recommended = _shares(shown, index, groups.labels)
    purchased = _shares(bought, index, groups.labels)
    names = sorted(
        set(recommended) | set(purchased), key=_order(groups.kind, recommended, purchased)
    )
    since = min((r[2] for r in bought_rows), default=None)
    return {
        "grouping": groups.kind,
        "recommended_from": source,
        "recommended_items": sum(shown.values()),
        "purchases": sum(bought.values()),
        "purchases_since_ms": since,
        "groups": names,
        "recommended_share": [recommended.get(g, 0.0) for g in names],
        "purchased_share": [purchased.get(g, 0.0) for g in names],
        "total_variation": _total_variation(recommended, purchased),
    }


def _order(kind: str, *shares: dict[str, float]) -> Callable[[str], Any]:
    """Price bands cheapest first; categories by their combined share, largest first."""
    if kind == "price band":
        return lambda g: (
            not g[0].isdigit(),
            float(g.split("–")[0].rstrip("+")) if g[0].isdigit() else 0,
        )
    return lambda g: -sum(s.get(g, 0.0) for s in shares)


def _shares(counts: dict[str, int], index: dict[str, int], labels: np.ndarray) -> dict[str, float]:
    by_group: Counter[str] = Counter()
    for item, n in counts.items():
        at = index.get(item)
        by_group["(not in catalogue)" if at is None else str(labels[at])] += n
    total = sum(by_group.values())
    return {g: n / total for g, n in by_group.items()} if total else {}


def _total_variation(p: dict[str, float], q: dict[str, float]) -> float | None:
    """Half the summed share differences: the share of one mix that would have to move."""
    if not p or not q:
        return None
    return 0.5 * sum(abs(p.get(g, 0.0) - q.get(g, 0.0)) for g in set(p) | set(q))


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
