"""The leaderboard of a choice as plain rows: what the terminal, the evaluation report and the
dashboard's model-quality page show. Reads a `Choice` or the JSON kept with a version."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

COLUMNS = (
    "rank",
    "model",
    "matrix",
    "stage",
    "ndcg@10",
    "other",
    "recall@10",
    "coverage@10",
    "fit_seconds",
)


def leaderboard_rows(choice: Mapping[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
    """Scored trials, best first on the protocol in force, from `Choice.to_json()`; the winner
    and the best baseline are always among them, whatever `limit`."""
    protocol = choice["protocol"]
    other = next((p for p in choice.get("protocols", []) if p != protocol), None)
    trials = [t for t in choice["trials"] if protocol in (t.get("scores") or {})]
    trials.sort(key=lambda t: -_score(t, protocol, "ndcg@10"))
    winner_key = _key(choice["winner"])
    first_baseline = next((t for t in trials if t.get("baseline")), None)
    rows = []
    for rank, trial in enumerate(trials, start=1):
        chosen = _key(trial) == winner_key
        kept = limit is None or rank <= limit or chosen or trial is first_baseline
        if not kept:
            continue
        rows.append(
            {
                "rank": rank,
                "model": trial["label"],
                "matrix": trial.get("matrix", ""),
                "stage": trial.get("stage", ""),
                "baseline": bool(trial.get("baseline")),
                "chosen": chosen,
                "ndcg@10": _score(trial, protocol, "ndcg@10"),
                "other": math.nan if other is None else _score(trial, other, "ndcg@10"),
                "recall@10": _score(trial, protocol, "recall@10"),
                "coverage@10": _score(trial, protocol, "coverage@10"),
                "fit_seconds": _seconds(trial.get("fit_seconds")),
            }
        )
    return rows


def other_protocol(choice: Mapping[str, Any]) -> str | None:
    return next((p for p in choice.get("protocols", []) if p != choice["protocol"]), None)


def failed(choice: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(candidate, error) of the trials that could not fit these data."""
    return [(t["label"], str(t["error"])) for t in choice["trials"] if t.get("error")]


def _score(trial: Mapping[str, Any], protocol: str, metric: str) -> float:
    value = (trial.get("scores") or {}).get(protocol, {}).get(metric)
    return -math.inf if value is None else float(value)


def _seconds(value: Any) -> float:
    return math.nan if value is None else float(value)


def _key(trial: Mapping[str, Any]) -> tuple[str, str]:
    return (trial["label"], trial.get("matrix", ""))
