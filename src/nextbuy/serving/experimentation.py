"""Experiments at request time: assignment, the variant's pipeline, shadows, bandit shares.

Per request (`serve`): the unit is hashed into one arm per layer (`assign_all`, a few
SHA-256s), the arm's overrides pick what computes the list (another model version, loaded
beside the serving one; placement rules of its own; the holdout's non-personalised
trending list), the response names the experiment and variant, and the list goes to the
exposure log. Shadow arms of the same experiment are computed afterwards on a background
thread for the same request and logged with ``shown = 0``; the response never waits for
them, and they are skipped (and counted) when the shadow queue is full.

Everything a request reads is one immutable `Plan`, swapped by a single assignment, as the
serving model is. A background thread rebuilds it every second from nextbuy.toml and the
store (so `nextbuy experiment stop` reaches a running server), loads the model versions
that running experiments need, and recomputes Thompson allocations every
``attribution.bandit_refresh_seconds``. An experiment becomes active only once every
version it names is loaded, so no unit is ever served the wrong arm while a model loads.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from nextbuy.config import load_settings
from nextbuy.config.experiments import ExperimentConfig, VariantConfig
from nextbuy.engine import Engine
from nextbuy.errors import ConfigError, NextbuyError
from nextbuy.experiments.assignment import unit_key
from nextbuy.experiments.attribution import bandit_counts
from nextbuy.experiments.bandit import experiment_allocation
from nextbuy.experiments.registry import ExperimentRegistry
from nextbuy.rules import PlacementConfig
from nextbuy.serving import recommend
from nextbuy.serving.assigner import CompiledAssigner
from nextbuy.serving.exposures import Arm
from nextbuy.serving.live import Live, Placement, build_placements, load_catalog
from nextbuy.serving.recommend import Ask
from nextbuy.serving.snapshot import build_serving_model
from nextbuy.store.records import open_allocation_table

if TYPE_CHECKING:
    from nextbuy.serving.state import ServingState

log = logging.getLogger("nextbuy.serving")

Compute = Callable[[Live, Ask], dict[str, Any]]
REFRESH_SECONDS = 1.0
MAX_SHADOW_INFLIGHT = 256
MAX_DERIVED_LIVES = 64
_random = random.SystemRandom()  # not seeded: a shuffled order must not be predictable
# Routes whose list is personal; a holdout unit gets trending there instead, on the
# placement the route would have used.
HOLDOUT_PLACEMENT = {"for_user": "home", "for_session": "home", "cart": "cart"}


@dataclass(frozen=True)
class Plan:
    """What requests read: every experiment (slices of a layer need all of them), the active
    ones, bandit weights and the extra loaded model versions."""

    experiments: tuple[ExperimentConfig, ...] = ()
    active: frozenset[str] = frozenset()
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    versions: dict[str, Live] = field(default_factory=dict)
    overrides: dict[tuple[str, str], dict[str, Placement]] = field(default_factory=dict)
    assigner: CompiledAssigner = field(default_factory=lambda: CompiledAssigner(()))

    def experiment(self, name: str) -> ExperimentConfig:
        for experiment in self.experiments:
            if experiment.name == name:
                return experiment
        raise KeyError(name)


@dataclass(frozen=True)
class Choice:
    """The arms one request landed in (one per layer) and their merged overrides."""

    arms: tuple[Arm, ...]
    variants: tuple[tuple[ExperimentConfig, VariantConfig], ...]
    shadows: tuple[tuple[ExperimentConfig, VariantConfig, str], ...]


def placement_overrides(variant: VariantConfig) -> dict[str, Placement]:
    """A variant's placements (rules, k, candidates), validated; ConfigError when invalid."""
    configs: dict[str, PlacementConfig] = {}
    for name, value in (variant.placement_overrides or {}).items():
        try:
            configs[name] = PlacementConfig.model_validate(value)
        except ValueError as exc:
            raise ConfigError(f"variant {variant.name!r}: placement {name!r}: {exc}") from None
    return build_placements(configs)


class ExperimentRuntime:
    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.registry = ExperimentRegistry(state.settings.store_path, state.settings.experiments)
        self.plan = Plan()
        self.errors: dict[str, str] = {}  # per experiment: why it is not serving
        self.load_errors: dict[str, str] = {}  # per model version that failed to load
        self.shadow_dropped = 0
        self._shadow_inflight = 0
        self._shadow_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._derived: dict[tuple[int, str, str], tuple[Live, Live]] = {}
        self._last_bandit: dict[str, float] = {}
        self._config_mtime: float | None = None
        self._catalog_seen: int | None = None
        self._preloaded: dict[str, Live] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nextbuy-shadow")
        self._thread = threading.Thread(target=self._run, name="nextbuy-experiments", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception:
                log.exception("refreshing experiments failed; the previous plan stays")
            if self._stop.wait(REFRESH_SECONDS):
                return

    # -- the plan ------------------------------------------------------------------------------
    def refresh(self, load: bool = True) -> Plan:
        """Rebuild the plan from the config file and the store; load needed versions."""
        with self._refresh_lock:
            self._reread_config()
            experiments = tuple(self.registry.all())
            running = [e for e in experiments if e.status == "running"]
            versions = self._versions(running, load)
            overrides: dict[tuple[str, str], dict[str, Placement]] = {}
            active, errors = set(), {}
            for experiment in running:
                try:
                    overrides |= self._overrides(experiment)
                except NextbuyError as exc:
                    errors[experiment.name] = str(exc)
                    continue
                missing = self._missing_versions(experiment, versions)
                if missing:
                    errors[experiment.name] = "; ".join(
                        self.load_errors.get(m, f"loading model version {m}") for m in missing
                    )
                    continue
                active.add(experiment.name)
            weights = self._weights(running)
            self.errors = errors
            assigner = CompiledAssigner(experiments, weights)
            self.plan = Plan(experiments, frozenset(active), weights, versions, overrides, assigner)
            return self.plan

    def _reread_config(self) -> None:
        path = self.state.settings.config_path
        if path is None:
            return
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if self._config_mtime is None:
            self._config_mtime = mtime
        elif mtime != self._config_mtime:
            self._config_mtime = mtime
            try:
                self.registry.configured = list(load_settings(path).experiments)
            except NextbuyError as exc:
                log.error("kept the previous experiments: %s", exc)

    def _overrides(self, experiment: ExperimentConfig) -> dict[tuple[str, str], dict]:
        found = {}
        for variant in experiment.variants:
            if variant.placement_overrides:
                found[(experiment.name, variant.name)] = placement_overrides(variant)
        return found

    def _missing_versions(self, experiment: ExperimentConfig, versions: dict[str, Live]) -> list:
        live = self.state.live
        serving = None if live is None else live.model.version
        return [
            v.model_version
            for v in experiment.variants
            if v.model_version and v.model_version != serving and v.model_version not in versions
        ]

    def _versions(self, running: Sequence[ExperimentConfig], load: bool) -> dict[str, Live]:
        """Loaded extra versions that running experiments name (others are let go)."""
        wanted = {v.model_version for e in running for v in e.variants if v.model_version}
        wanted.discard(self._serving_name())  # served by the main model already
        have = {**self.plan.versions, **self._preloaded}
        for name in wanted:  # loaded by `prepare` for an experiment now running
            self._preloaded.pop(name, None)
        catalog_changed = self._catalog_changed()
        out = {}
        for name in sorted(wanted):
            live = have.get(name)
            if live is None and load and name not in self.load_errors:
                live = self._load_version(name)
            if live is None:
                continue
            if catalog_changed:
                live = self._with_store_catalog(live)
            if live.placements is not self.state.placements:
                live = live.with_placements(self.state.placements)
            out[name] = live
        return out

    def _catalog_changed(self) -> bool:
        # Item routes change the serving catalogue; extra versions re-read theirs from the
        # store (at most once a refresh) so availability holds in every arm.
        live = self.state.live
        seen = None if live is None else id(live.catalog)
        changed = self._catalog_seen is not None and seen != self._catalog_seen
        self._catalog_seen = seen
        return changed

    def _with_store_catalog(self, live: Live) -> Live:
        model = live.model
        return live.with_catalog(load_catalog(self.state.store, model.engine, model.data.item_ids))

    def _serving_name(self) -> str | None:
        live = self.state.live
        if live is not None:
            return live.model.version
        version = self.state.registry.serving()
        return None if version is None else version.name

    def _load_version(self, name: str) -> Live | None:
        settings, store = self.state.settings, self.state.store
        try:
            version = self.state.registry.get(name)
            engine = Engine.load(version.path, settings)
            served = build_serving_model(engine, version, settings, store)
            catalog = load_catalog(store, engine, served.data.item_ids)
        except Exception as exc:
            # remembered, so a bad version is not reloaded every second; a new start retries
            self.load_errors[name] = f"model version {name} did not load: {exc}"
            log.error("experiments: loading model version %s failed: %s", name, exc)
            return None
        log.info("experiments: loaded model version %s (%s)", name, served.model_name)
        return Live.create(
            served, catalog, self.state.placements, settings.serving.new_arrival_days
        )

    def check(self, experiment: ExperimentConfig) -> None:
        """ConfigError when a variant's rules are invalid or it names an unknown version."""
        self._overrides(experiment)
        known = {v.name for v in self.state.registry.versions()}
        for variant in experiment.variants:
            if variant.model_version and variant.model_version not in known:
                raise ConfigError(
                    f"variant {variant.name!r}: model version {variant.model_version!r} "
                    f"does not exist (trained: {', '.join(sorted(known)) or 'none'})"
                )

    def prepare(self, experiment: ExperimentConfig) -> None:
        """Check the experiment and load the versions it names before it starts, so it
        serves from its first request; ConfigError (and no change) when one cannot load."""
        self.check(experiment)
        with self._refresh_lock:
            for variant in experiment.variants:
                name = variant.model_version
                known = {self._serving_name(), *self.plan.versions, *self._preloaded}
                if not name or name in known:
                    continue
                self.load_errors.pop(name, None)
                live = self._load_version(name)
                if live is None:
                    raise ConfigError(self.load_errors[name])
                self._preloaded[name] = live

    def _weights(self, running: Sequence[ExperimentConfig]) -> dict[str, dict[str, float]]:
        weights = {}
        now = time.monotonic()
        every = self.state.settings.attribution.bandit_refresh_seconds
        for experiment in running:
            if experiment.allocation != "thompson":
                continue
            current = self.plan.weights.get(experiment.name)
            if current is None:
                current = latest_allocation(self.state.settings.store_path, experiment.name)
                self._last_bandit.setdefault(experiment.name, now)
            if now - self._last_bandit.get(experiment.name, 0.0) >= every:
                self._last_bandit[experiment.name] = now
                current = self._recompute(experiment)
            weights[experiment.name] = current or experiment.planned_weights()
        return weights

    def _recompute(self, experiment: ExperimentConfig) -> dict[str, float]:
        self.state.exposures.flush()
        path = self.state.settings.store_path
        successes, trials = bandit_counts(path, experiment.name, experiment.bandit_metric)
        weights = experiment_allocation(
            experiment, successes, trials, seed=int(time.time() * 1000) % 2**32
        )
        record_allocation(path, experiment.name, weights, successes, trials)
        return weights

    # -- request path --------------------------------------------------------------------------
    def choose(self, plan: Plan, ask: Ask) -> Choice | None:
        try:
            found = plan.assigner.assign(ask.user_id, ask.session_id)
        except ValueError:
            return None  # neither user nor session: nothing to randomise on
        arms, variants, shadows = [], [], []
        for assignment in found.values():
            if assignment.variant is None or assignment.experiment not in plan.active:
                continue
            experiment = plan.experiment(assignment.experiment)
            unit = unit_key(experiment, ask.user_id, ask.session_id)
            arms.append(Arm(experiment.name, assignment.variant, unit))
            variants.append((experiment, experiment.variant(assignment.variant)))
            shadows += [(experiment, experiment.variant(s), unit) for s in assignment.shadows]
        if not arms:
            return None
        return Choice(tuple(arms), tuple(variants), tuple(shadows))

    def live_for(
        self, plan: Plan, live: Live, variants: Sequence[tuple[ExperimentConfig, VariantConfig]]
    ) -> Live:
        """The serving state the variants ask for; a later layer wins where they clash."""
        for _, variant in variants:
            if variant.model_version and variant.model_version != live.model.version:
                live = plan.versions.get(variant.model_version, live)
        for experiment, variant in variants:
            placements = plan.overrides.get((experiment.name, variant.name))
            if placements:
                live = self._derived_live(live, experiment.name, variant.name, placements)
        return live

    def _derived_live(
        self, live: Live, experiment: str, variant: str, placements: dict[str, Placement]
    ) -> Live:
        # Cached per base object, so the derived lists (popularity, best sellers) are built
        # once per model/catalogue rather than per request.
        key = (id(live), experiment, variant)
        found = self._derived.get(key)
        if found is not None and found[0] is live:
            return found[1]
        if len(self._derived) >= MAX_DERIVED_LIVES:
            self._derived.clear()
        derived = live.with_placements({**live.placements, **placements})
        self._derived[key] = (live, derived)
        return derived

    def serve(self, plan: Plan, live: Live, route: str, ask: Ask, compute: Compute) -> dict:
        choice = self.choose(plan, ask)
        exposures = self.state.exposures
        if choice is None:
            body = compute(live, ask)
            exposures.record(body, ask.session_id, route)
            return body
        chosen = self.live_for(plan, live, choice.variants)
        if any(v.holdout for _, v in choice.variants) and route in HOLDOUT_PLACEMENT:
            body = self._holdout(chosen, route, ask)
        else:
            body = compute(chosen, ask)
        if any(v.shuffle for _, v in choice.variants):
            shuffle(body)
        body["experiment"], body["variant"] = choice.arms[0].experiment, choice.arms[0].variant
        if len(choice.arms) > 1:
            body["assignments"] = {arm.experiment: arm.variant for arm in choice.arms}
        exposures.record(body, ask.session_id, route, choice.arms)
        for experiment, variant, unit in choice.shadows:
            self._shadow(plan, live, route, ask, compute, experiment, variant, unit, body)
        return body

    def _holdout(self, live: Live, route: str, ask: Ask) -> dict:
        asked = replace(ask, placement=ask.placement or HOLDOUT_PLACEMENT[route])
        return recommend.trending(self.state, live, asked)

    def _shadow(
        self, plan: Plan, live: Live, route: str, ask: Ask, compute: Compute,
        experiment: ExperimentConfig, variant: VariantConfig, unit: str, shown: dict,
    ) -> None:  # fmt: skip
        with self._shadow_lock:
            if self._pool is None or self._shadow_inflight >= MAX_SHADOW_INFLIGHT:
                self.shadow_dropped += 1
                return
            self._shadow_inflight += 1
        arm = Arm(experiment.name, variant.name, unit)
        shown_id = shown["recommendation_id"]

        def work() -> None:
            try:
                body = compute(self.live_for(plan, live, [(experiment, variant)]), ask)
                body["experiment"], body["variant"] = experiment.name, variant.name
                self.state.exposures.record(
                    body, ask.session_id, route, (arm,), shown=False, shadow_of=shown_id
                )
            except Exception:
                log.exception("shadow variant %s/%s failed", experiment.name, variant.name)
            finally:
                with self._shadow_lock:
                    self._shadow_inflight -= 1

        try:
            self._pool.submit(work)
        except RuntimeError:  # shutting down
            with self._shadow_lock:
                self._shadow_inflight -= 1

    # -- status --------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """Every experiment with its status, whether it is serving, and current shares."""
        plan = self.plan
        out = []
        for experiment in plan.experiments:
            data = json.loads(experiment.model_dump_json())
            data["active"] = experiment.name in plan.active
            data["allocation_weights"] = plan.weights.get(
                experiment.name, experiment.planned_weights()
            )
            data["problem"] = self.errors.get(experiment.name)
            out.append(data)
        return out


def shuffle(body: dict[str, Any]) -> None:
    """Serve the list in random order (positions renumbered); marked for position-bias fits."""
    items = body["items"]
    _random.shuffle(items)
    for position, entry in enumerate(items, start=1):
        entry["position"] = position
    body["shuffled"] = True


def serve(state: ServingState, route: str, ask: Ask, compute: Compute) -> dict[str, Any]:
    """A route's list under whatever experiments the asker is in, logged as an exposure."""
    live = state.current()
    runtime = state.experiments
    plan = runtime.plan
    if not plan.active:
        body = compute(live, ask)
        state.exposures.record(body, ask.session_id, route)
        return body
    return runtime.serve(plan, live, route, ask, compute)


def record_allocation(
    store_path: Any, experiment: str, weights: dict, successes: dict, trials: dict
) -> None:
    now = int(time.time() * 1000)
    open_allocation_table(store_path).add(experiment, now, weights, successes, trials)


def latest_allocation(store_path: Any, experiment: str) -> dict[str, float] | None:
    """The last stored Thompson allocation, so a restart keeps the bandit's shares."""
    history = open_allocation_table(store_path).history(experiment)
    return history[-1][1] if history else None
