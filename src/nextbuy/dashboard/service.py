"""The dashboard's state: cached aggregates, refreshed by one background thread.

Page views only read what the thread last computed, so a view costs the same with a
thousand or ten million events. The thread (started by the first dashboard request) wakes
every TICK_SECONDS: it samples the request metrics, and when the store changed (its change
marker moved) it extends the event aggregate and recomputes the lighter figures. Every
recomputation waits at least COOLDOWN times as long as it last took, so a big store never
keeps a core busy. The data audit (a pass over every event) runs in a child process at low
priority, so its pandas work never holds the server's GIL, and its result is kept on disk.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nextbuy.dashboard import impact, quality
from nextbuy.dashboard.aggregates import SETTLE_MS, EventAggregates
from nextbuy.dashboard.sessions import DashboardSessions
from nextbuy.dashboard.telemetry import Sampler
from nextbuy.store.dashboard_reads import open_dashboard_reads

if TYPE_CHECKING:
    from nextbuy.serving.state import ServingState

log = logging.getLogger("nextbuy.dashboard")

TICK_SECONDS = 1.0
COOLDOWN = 10.0  # wait at least this many times a job's last duration before running it again
MIN_INTERVAL = {"events": 2.0, "figures": 5.0, "business": 5.0, "experiments": 10.0, "audit": 60.0}
AUDIT_TIMEOUT_SECONDS = 1800
VERIFY_SECONDS = 60.0  # how often the event aggregate's count check runs without imports


@dataclass
class Job:
    """One cached computation: its last result, when and how long it took."""

    name: str
    compute: Callable[[], Any]
    cost: Callable[[], float] | None = None  # what the next run will likely take
    result: Any = None
    error: str | None = None
    finished_at: float = 0.0
    seconds: float = 0.0
    data_version: int = -1  # the store's change marker the result reflects

    def due(self, version: int, now: float) -> bool:
        if self.finished_at == 0.0:
            return True
        if version == self.data_version:
            return False
        likely = self.cost() if self.cost is not None else self.seconds
        wait = max(MIN_INTERVAL.get(self.name, 5.0), COOLDOWN * likely)
        return now - self.finished_at >= wait

    def run(self, version: int) -> None:
        started = time.perf_counter()
        try:
            self.result = self.compute()
            self.error = None
        except Exception as exc:  # a failed figure must not stop the others
            log.exception("dashboard: computing %s failed", self.name)
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds = time.perf_counter() - started
        self.finished_at = time.time()
        self.data_version = version


class Dashboard:
    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.sessions = DashboardSessions(state.keys)
        self.folder = state.settings.data_dir / "dashboard"
        # one reads object, so the change marker keeps its own long-lived connection
        self.reads = open_dashboard_reads(state.settings.store_path)
        self.events = EventAggregates(
            state.settings.store_path, self.folder / "aggregates.json", self.reads
        )
        self.sampler = Sampler(state.metrics)
        self.audit_path = self.folder / "audit.json"
        self.jobs = {
            "events": Job("events", self._refresh_events, self._events_cost),
            "figures": Job("figures", self._figures),
            "business": Job("business", lambda: impact.business(state)),
            "experiments": Job("experiments", lambda: impact.experiments(state)),
            "audit": Job("audit", self._audit),
        }
        saved = self._saved_audit()
        if saved is not None:
            self.jobs["audit"].result = saved
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._wake = threading.Event()
        self._audit_thread: threading.Thread | None = None
        self._imports_seen: int | None = None
        self._verify_next = False
        self._up_to_now = False

    # -- the background thread -------------------------------------------------------------------
    def ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="nextbuy-dashboard", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        stopped = self.state._stop  # the serving state's own stop signal ends this thread too
        while not stopped.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("dashboard refresh failed")
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
        self.reads.close()

    def tick(self, force: tuple[str, ...] = ()) -> None:
        """Sample metrics; run every job that is due (or forced). The audit, minutes long on
        a big store, runs on a thread of its own unless forced, so it never holds up the
        other figures."""
        with self._run_lock:
            if self.sampler.due():
                self.sampler.sample()
            version = self._data_version()
            now = time.time()
            for name, job in self.jobs.items():
                if name in force:
                    job.run(version)
                elif name == "audit":
                    if job.due(version, now) and not self._audit_running():
                        self._audit_thread = threading.Thread(
                            target=job.run, args=(version,), name="nextbuy-audit", daemon=True
                        )
                        self._audit_thread.start()
                elif job.due(version, now) or (name == "figures" and self._model_changed(now)):
                    job.run(version)

    def _audit_running(self) -> bool:
        return self._audit_thread is not None and self._audit_thread.is_alive()

    def _model_changed(self, now: float) -> bool:
        """A swapped model changes the figures read from its lists before any data does."""
        live, job = self.state.live, self.jobs["figures"]
        if live is None or now - job.finished_at < MIN_INTERVAL["figures"]:
            return False
        return (job.result or {}).get("version") != live.model.version

    def refresh(self, audit: bool = False) -> None:
        """Bring every figure up to date now (the audit only when asked)."""
        self.ensure_running()
        # An explicit refresh covers everything served and stored up to now: queued lists
        # are written first, and the settle margin of the periodic refresh is not waited for.
        self.state.exposures.flush()
        self._verify_next = True
        self._up_to_now = True
        quick = ("events", "figures", "business", "experiments")
        self.tick(force=(*quick, "audit") if audit else quick)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until an aggregate exists (a saved one counts: only the very first view
        of a project ever waits)."""
        self.ensure_running()
        deadline = time.monotonic() + timeout
        while self.events.counts.covered_until is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _data_version(self) -> int:
        """Changes whenever another connection commits to the store; the serving store's
        own writes count too."""
        return self.reads.change_marker()

    # -- the jobs ---------------------------------------------------------------------------------
    def _refresh_events(self) -> Any:
        """Extend the event aggregate; check its count when imports changed or now and then."""
        imports = self._last_import()
        counts = self.events.counts
        verify = (
            self._verify_next
            or imports != self._imports_seen
            or time.time() - counts.verified_at >= VERIFY_SECONDS
        )
        self._verify_next = False
        now_ms = int(time.time() * 1000) + SETTLE_MS if self._up_to_now else None
        self._up_to_now = False
        fresh = self.events.refresh(now_ms=now_ms, verify=verify)
        self._imports_seen = imports
        return fresh

    def _events_cost(self) -> float:
        counts = self.events.counts
        return 0.0 if counts.rebuilt else counts.last_refresh_seconds

    def _last_import(self) -> int:
        return self.reads.last_import_id()

    def _figures(self) -> dict[str, Any]:
        """Model-quality figures that read the serving model and a bounded slice of the store."""
        live = self.state.live
        if live is None:
            return {}
        counts = self.events.counts
        last_purchase = max(
            (c.last_ts for (_, kind), c in counts.cells.items() if kind == "purchase"), default=0
        )
        since = max(last_purchase - 90 * 86_400_000, 0)
        return {
            "version": live.model.version,
            "beyond": self._beyond(live),
            "drift": quality.drift(live, self.reads, since),
        }

    def _beyond(self, live: Any) -> dict[str, Any]:
        cached = self.jobs["figures"].result
        if cached and cached.get("version") == live.model.version:
            return cached["beyond"]  # the top lists change only with the model
        return quality.beyond_accuracy(live)

    def _audit(self) -> dict[str, Any]:
        """The data audit of `nextbuy stats`, in a child process at low priority."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "nextbuy.dashboard.audit_job",
            str(self.state.settings.store_path),
            str(self.audit_path),
        ]
        subprocess.run(
            command,
            check=True,
            timeout=AUDIT_TIMEOUT_SECONDS,
            capture_output=True,
            preexec_fn=_lower_priority if os.name == "posix" else None,
        )
        saved = self._saved_audit()
        if saved is None:
            raise RuntimeError("the audit wrote no result")
        return saved

    def _saved_audit(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.audit_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # -- what pages read --------------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """When each figure was computed and how long it took."""
        return {
            name: {
                "computed_at": job.finished_at or None,
                "seconds": round(job.seconds, 3),
                "error": job.error,
            }
            for name, job in self.jobs.items()
        }


def _lower_priority() -> None:
    os.nice(10)
