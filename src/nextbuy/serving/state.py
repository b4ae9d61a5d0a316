"""The server's state: the live model/catalogue/rules, online state, profiles, keys, watchers.

Swaps are one reference assignment (`self.live = new`): a request reads `state.live` once
and keeps that object, so a request in flight finishes on the model it started with and no
request ever fails because a swap happened. Writers (model loader, item routes, rules
reload) build the new object aside and assign it under `_write_lock`, so two writers
never lose each other's change.

A model load reads the catalogue from the store; an item written meanwhile is also
recorded in `_catalog_log` and replayed onto the new catalogue before the swap.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from nextbuy.config import Settings, load_settings
from nextbuy.engine import Engine
from nextbuy.errors import NextbuyError
from nextbuy.rules.catalog import ItemCatalog
from nextbuy.serving.candidate_refresh import CandidateRefresher
from nextbuy.serving.erasures import Erasures
from nextbuy.serving.errors import Unavailable
from nextbuy.serving.experimentation import ExperimentRuntime
from nextbuy.serving.exposures import ExposureLog
from nextbuy.serving.keys import KeyStore
from nextbuy.serving.live import Live, Placement, build_placements, load_catalog
from nextbuy.serving.metrics import Metrics
from nextbuy.serving.online import SESSION, USER, OnlineEvent, OnlineState, shopper_key
from nextbuy.serving.profiles import Profiles
from nextbuy.serving.shopper import Shopper, resolve
from nextbuy.serving.snapshot import ModelRejected, build_serving_model
from nextbuy.store import open_store
from nextbuy.store.base import Store, is_missing
from nextbuy.store.registry import ModelRegistry, Version

log = logging.getLogger("nextbuy.serving")

CatalogChange = Callable[[ItemCatalog], ItemCatalog]
TICK_SECONDS = 0.25
CONFIG_CHECK_SECONDS = 1.0
FRESH_REFRESH_SECONDS = 60.0


class ServingState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.weights = settings.events.all_weights()
        self.metrics = Metrics()
        self.store: Store = open_store(settings.store_path)
        self.keys = KeyStore(settings.store_path)
        self.erasures = Erasures(settings.store_path)
        self.registry = ModelRegistry(settings.models_dir)
        self.online = OnlineState()
        self.profiles = Profiles.from_frame(self.store.serving_profiles())
        self.placements = build_placements(settings.placements)
        self.live: Live | None = None
        self.last_load_error: str | None = None
        self._write_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._catalog_log: list[CatalogChange] | None = None
        # user -> sessions seen with them, so erasing the user forgets those sessions too
        self._sessions_of: dict[str, set[str]] = {}
        self._online_since_ms: int | None = None  # store events after this are in `online`
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._config_mtime = self._mtime()
        self.exposures = ExposureLog(
            settings.store_path, settings.attribution.exposure_flush_seconds
        )
        self.experiments = ExperimentRuntime(self)
        self.refresher = CandidateRefresher(self)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Load the serving version and start the watchers, all in the background."""
        for name, target in (
            ("model-watcher", self._watch_model),
            ("config-watcher", self._watch_config),
        ):
            thread = threading.Thread(target=target, name=f"nextbuy-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.exposures.start()
        self.experiments.start()
        self.refresher.start()

    def stop(self) -> None:
        self._stop.set()
        self.refresher.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self.experiments.stop()
        self.exposures.stop()  # every list served so far reaches the store before exit
        self.store.close()

    @property
    def ready(self) -> bool:
        return self.live is not None

    def current(self) -> Live:
        live = self.live
        if live is None:
            raise Unavailable("no model loaded yet: run `nextbuy train`, or wait for the load")
        return live

    # -- model loading --------------------------------------------------------------------------
    def _watch_model(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_model()
            except Exception:
                log.exception("model check failed")
            self._stop.wait(self.settings.serving.model_poll_seconds)

    def check_model(self) -> bool:
        """Load and swap in the registry's serving version if it is not the one live."""
        with self._load_lock:
            version = self.registry.serving()
            live = self.live
            if version is None or (live is not None and live.model.version == version.name):
                return False
            if self.last_load_error and self.last_load_error.startswith(f"{version.name}:"):
                return False  # already rejected; wait for another promotion
            try:
                self._load(version)
            except Exception as exc:
                outcome = "rejected" if isinstance(exc, ModelRejected) else "failed"
                self.metrics.model_loads.labels(outcome).inc()
                self.last_load_error = f"{version.name}: {exc}"
                log.error("kept %s: loading %s failed: %s", self._version(), version.name, exc)
                return False
            return True

    def _load(self, version: Version) -> None:
        started = time.perf_counter()
        engine = Engine.load(version.path, self.settings)
        with self._write_lock:
            self._catalog_log = []
        try:
            served = build_serving_model(engine, version, self.settings, self.store)
            self._seed_online(served.cut_ms)
            catalog = load_catalog(self.store, engine, served.data.item_ids)
            with self._write_lock:
                for change in self._catalog_log or []:
                    catalog = change(catalog)
                live = Live.create(
                    served, catalog, self.placements, self.settings.serving.new_arrival_days
                )
                path = served.model.request_path()
                if path is not None:
                    path.keep_at_most(self.settings.serving.candidate_cache)
                self.live = live
                self._catalog_log = None
        except BaseException:
            with self._write_lock:
                self._catalog_log = None
            raise
        settle_heap()
        self.last_load_error = None
        self.metrics.model_loads.labels("swapped").inc()
        self.metrics.set_model(version.name, served.model_name)
        log.info(
            "serving %s (%s): %d users, %d items, loaded in %.1f s",
            version.name,
            served.model_name,
            served.data.n_users,
            served.data.n_items,
            time.perf_counter() - started,
        )

    def _version(self) -> str:
        return self.live.model.version if self.live is not None else "nothing"

    def _seed_online(self, cut_ms: int) -> None:
        """Events stored after the training data ended count as online state."""
        if self._online_since_ms is not None and self._online_since_ms <= cut_ms:
            return
        since = datetime.fromtimestamp((cut_ms + 1) / 1000, UTC)
        until = None
        if self._online_since_ms is not None:
            until = datetime.fromtimestamp((self._online_since_ms + 1) / 1000, UTC)
        for batch in self.store.interactions(since=since, until=until):
            self.add_online(batch.to_pandas())
        self._online_since_ms = cut_ms

    # -- catalogue, rules, online state ---------------------------------------------------------
    def change_catalog(self, change: CatalogChange) -> None:
        with self._write_lock:
            if self._catalog_log is not None:
                self._catalog_log.append(change)
            live = self.live
            if live is not None:
                self.live = live.with_catalog(change(live.catalog))

    def reload_rules(self) -> dict[str, Placement]:
        """Re-read nextbuy.toml's placements; a bad file raises and changes nothing."""
        path = self.settings.config_path
        settings = load_settings(path) if path is not None else self.settings
        placements = build_placements(settings.placements)
        with self._write_lock:
            self.placements = placements
            if self.live is not None:
                self.live = self.live.with_placements(placements)
        self._config_mtime = self._mtime()
        return placements

    def _mtime(self) -> float | None:
        path = self.settings.config_path
        try:
            return os.stat(path).st_mtime if path is not None else None
        except OSError:
            return None

    def _watch_config(self) -> None:
        last_check = last_fresh = time.monotonic()
        while not self._stop.wait(TICK_SECONDS):
            now = time.monotonic()
            if now - last_check >= CONFIG_CHECK_SECONDS:
                last_check = now
                self._config_tick()
            if now - last_fresh >= FRESH_REFRESH_SECONDS:
                last_fresh = now
                with self._write_lock:
                    if self.live is not None:
                        self.live = self.live.refreshed()

    def _config_tick(self) -> None:
        try:
            self.keys.refresh()
        except Exception:
            log.exception("reading API keys failed")
        mtime = self._mtime()
        if mtime is not None and mtime != self._config_mtime:
            self._config_mtime = mtime
            try:
                self.reload_rules()
                log.info("rules reloaded from %s", self.settings.config_path)
            except NextbuyError as exc:
                log.error("kept the previous rules: %s", exc)

    def add_online(self, events: pd.DataFrame, generate_ahead: bool = False) -> None:
        """Events (store columns, timestamp in ms or datetime) into the per-shopper state;
        `generate_ahead`: the hybrid's candidates of their shoppers are generated next."""
        if events.empty:
            return
        # Python lists: iterating pandas columns element by element cost ~1 ms a batch
        ts = _millis(events["timestamp"]).tolist()
        keys = events["event_key"].tolist()
        users = events["user_id"].tolist()
        sessions = events["session_id"].tolist() if "session_id" in events else None
        by_shopper: dict[str, list[OnlineEvent]] = {}
        ahead: dict[str, None] = {}  # shoppers to generate for, in arrival order
        for i, (item, kind) in enumerate(
            zip(events["item_id"].tolist(), events["event_type"].tolist(), strict=True)
        ):
            event = OnlineEvent(
                str(item), str(kind), self.weights.get(kind, 0.0), int(ts[i]), int(keys[i])
            )
            user = None if is_missing(users[i]) else str(users[i])
            session = None
            if sessions is not None and not is_missing(sessions[i]):
                session = str(sessions[i])
            who = shopper_key(user, session)
            if who is not None:
                ahead[who] = None
            if user is not None:
                by_shopper.setdefault(USER + user, []).append(event)
            if session is not None:
                by_shopper.setdefault(SESSION + session, []).append(event)
                if user is not None:
                    self._sessions_of.setdefault(user, set()).add(session)
        for who, found in by_shopper.items():
            self.online.add(who, sorted(found, key=lambda e: e.ts_ms))
        self.metrics.online_shoppers.set(len(self.online))
        if generate_ahead:
            self.refresher.notify(ahead)

    def shopper(self, live: Live, user_id: str | None, session_id: str | None) -> Shopper:
        profile = self.profiles.get(user_id)
        suppressed = user_id is not None and self.erasures.suppressed(
            user_id, live.model.trained_at_ms
        )
        # the version's own event weights: the automatic choice may have chosen others
        weights = live.model.data.weights or self.weights
        return resolve(live, self.online, weights, user_id, session_id, profile, suppressed)

    def forget_user(self, user_id: str) -> None:
        """Erasure beyond the store: suppression list, profile and online state."""
        self.erasures.record(user_id)
        self.exposures.flush()  # so the store's erasure also removes lists still queued
        self.profiles.forget(user_id)
        live = self.live
        path = None if live is None else live.model.model.request_path()
        sessions = [SESSION + session for session in self._sessions_of.pop(user_id, ())]
        for who in (USER + user_id, *sessions):
            self.online.forget(who)
            self.refresher.forget(who)
            if path is not None:
                path.forget(who)
        self.metrics.online_shoppers.set(len(self.online))


def settle_heap() -> None:
    """Collect what a model swap left behind, then exempt the live objects from later
    collections: a full collection walked every object of the served model (~90 ms on the
    100,000-item catalogue, measured), and the request that set it off waited that long.
    Frozen objects are still freed by reference counting; only a cycle among them waits for
    the next load (a model still held by a request in flight, at most one)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _millis(values: pd.Series) -> np.ndarray:
    if isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M":
        stamps = values.dt.tz_convert("UTC") if getattr(values.dt, "tz", None) else values
        out = stamps.dt.tz_localize(None).astype("datetime64[ms]").astype("int64").to_numpy().copy()
        out[values.isna().to_numpy()] = 0
        return out
    return pd.to_numeric(values, errors="coerce").fillna(0).to_numpy(np.int64)
