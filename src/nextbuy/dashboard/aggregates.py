"""Events per day and type, kept current without scanning the events table per page view.

The aggregate covers every dated event with ``ts < covered_until``. A refresh reads only the
events in ``[covered_until, now - SETTLE_MS)`` through an index on ``events(ts)`` (made on
first use). Now and then (and whenever the import log grows) it also checks, in the same
read snapshot, that the events it covers number exactly those the store holds before the
mark, a walk of that index (0.15 s at a million events). A mismatch means rows arrived
behind the mark (an import of older history, an event sent with an old timestamp) or went
away (an erasure), and the aggregate is rebuilt by one full scan. Event keys cannot serve as
the mark: they are content hashes and random numbers, not a sequence. Events younger than
SETTLE_MS wait for the next refresh, so an event sent with a timestamp a little in the past
is still counted incrementally.

The aggregate is saved as JSON beside the store, so a restarted server shows it at once and
only checks what changed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextbuy.store.dashboard_reads import DashboardReads, open_dashboard_reads

DAY_MS = 86_400_000
SETTLE_MS = 2_000
# A full rebuild every so often also catches what the count check cannot see (an erasure
# and an import of exactly as many older rows between two refreshes).
REBUILD_SECONDS = 6 * 3600
VERSION = 1


@dataclass
class DayType:
    """Totals of one event type on one day."""

    events: int = 0
    attributed: int = 0  # events that name the recommendation they follow from
    revenue: float = 0.0  # sum of purchase values
    last_ts: int = 0

    def add(self, events: int, attributed: int, revenue: float | None, last_ts: int) -> None:
        self.events += int(events)
        self.attributed += int(attributed or 0)
        self.revenue += float(revenue or 0.0)
        self.last_ts = max(self.last_ts, int(last_ts))


@dataclass
class DailyCounts:
    """The aggregate itself: (day number, event type) -> totals, and what it covers."""

    cells: dict[tuple[int, str], DayType] = field(default_factory=dict)
    covered_until: int | None = None
    covered_events: int = 0
    undated: int = 0
    built_at: float = 0.0
    verified_at: float = 0.0  # the last count check (or full scan)
    full_scans: int = 0
    incremental_refreshes: int = 0
    rebuilt: bool = False  # made by a full scan (the next refresh is likely cheap)
    last_refresh_seconds: float = 0.0

    def add_rows(self, rows: Iterable[tuple[Any, ...]]) -> int:
        added = 0
        for day, kind, events, attributed, revenue, last_ts in rows:
            self.cells.setdefault((int(day), str(kind)), DayType()).add(
                events, attributed, revenue, last_ts
            )
            added += int(events)
        return added

    # -- views ----------------------------------------------------------------------------------
    def event_types(self) -> list[str]:
        return sorted({kind for _, kind in self.cells})

    def days(self) -> list[int]:
        return sorted({day for day, _ in self.cells})

    def by_type(self) -> dict[str, DayType]:
        out: dict[str, DayType] = {}
        for (_, kind), cell in self.cells.items():
            out.setdefault(kind, DayType()).add(
                cell.events, cell.attributed, cell.revenue, cell.last_ts
            )
        return out

    def per_day(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (day, _), cell in self.cells.items():
            out[day] = out.get(day, 0) + cell.events
        return out

    # -- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "covered_until": self.covered_until,
            "covered_events": self.covered_events,
            "undated": self.undated,
            "built_at": self.built_at,
            "verified_at": self.verified_at,
            "cells": [
                [day, kind, c.events, c.attributed, c.revenue, c.last_ts]
                for (day, kind), c in sorted(self.cells.items())
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DailyCounts:
        out = cls(
            covered_until=data["covered_until"],
            covered_events=int(data["covered_events"]),
            undated=int(data.get("undated", 0)),
            built_at=float(data.get("built_at", 0.0)),
            verified_at=float(data.get("verified_at", 0.0)),
        )
        out.add_rows(data["cells"])
        return out


class EventAggregates:
    """Maintains DailyCounts for one store; `refresh` is called from one thread."""

    def __init__(
        self, store_path: Path, cache_path: Path, reads: DashboardReads | None = None
    ) -> None:
        self.store_path = Path(store_path)
        self.cache_path = Path(cache_path)
        self.reads = open_dashboard_reads(self.store_path) if reads is None else reads
        self.counts = self._load()  # replaced whole, so readers never see half an update

    def refresh(self, now_ms: int | None = None, verify: bool = True) -> DailyCounts:
        """Bring the aggregate up to `now - SETTLE_MS`; a full scan only when needed.

        `verify=False` skips the count that catches rows behind the mark (an index walk
        over every event): the caller runs it now and then, and whenever imports change."""
        started = time.perf_counter()
        mark = (int(time.time() * 1000) if now_ms is None else now_ms) - SETTLE_MS
        self.reads.ensure_daily_index()
        current = self.counts
        stale = time.time() - current.built_at > REBUILD_SECONDS
        if current.covered_until is None or stale:
            fresh = self._rebuild(mark)
        elif mark <= current.covered_until and not verify:
            return current
        else:
            mark = max(mark, current.covered_until)
            fresh = self._extend(current, mark, verify) or self._rebuild(mark)
        fresh.last_refresh_seconds = time.perf_counter() - started
        self.counts = fresh
        self._save(fresh)
        return fresh

    def _extend(self, current: DailyCounts, mark: int, verify: bool) -> DailyCounts | None:
        """The aggregate plus [covered_until, mark), or None when rows appeared behind it."""
        assert current.covered_until is not None
        # the new rows and the counts that check them come from one snapshot
        rows, counted, undated_now = self.reads.daily_counts_between(
            current.covered_until, mark, verify
        )
        added = sum(int(r[2]) for r in rows)
        expected = current.covered_events + added if counted is None else counted
        undated = current.undated if undated_now is None else undated_now
        if current.covered_events + added != expected or undated != current.undated:
            return None
        fresh = DailyCounts(
            cells={k: DayType(**vars(v)) for k, v in current.cells.items()},
            covered_until=mark,
            covered_events=expected,
            undated=undated,
            built_at=current.built_at,
            verified_at=time.time() if verify else current.verified_at,
            full_scans=current.full_scans,
            incremental_refreshes=current.incremental_refreshes + 1,
        )
        fresh.add_rows(rows)
        return fresh

    def _rebuild(self, mark: int) -> DailyCounts:
        rows, undated = self.reads.daily_counts_all(mark)
        now = time.time()
        fresh = DailyCounts(covered_until=mark, undated=undated, built_at=now, verified_at=now)
        fresh.covered_events = fresh.add_rows(rows)
        fresh.rebuilt = True
        fresh.full_scans = self.counts.full_scans + 1
        fresh.incremental_refreshes = self.counts.incremental_refreshes
        return fresh

    def _load(self) -> DailyCounts:
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
            if data.get("version") == VERSION:
                return DailyCounts.from_json(data)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no cache or an unreadable one: the first refresh rebuilds
        return DailyCounts()

    def _save(self, counts: DailyCounts) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.cache_path.with_suffix(".tmp")
        temp.write_text(json.dumps(counts.to_json()), encoding="utf-8")
        os.replace(temp, self.cache_path)


def day_label(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86_400))
