"""The automatic choice: which model, with which parameters and event weighting, for this shop.

`choose` holds out the latest window of events (as `nextbuy train` validates), measures the
data's shape, decides whether lists may repeat earlier purchases, and then, within a time
budget, scores on that window:

1. the baselines: best sellers (by customers and by events), trending items at several
   half-lives and, for shops that buy again, each customer's own history;
2. every model family that fits the data at its defaults (the version in service is scored
   before anything, when there is one);
3. the training matrix: time decay, event-weight variants and rating values, with the
   strongest family;
4. the hybrid pipeline, when the budget affords it;
5. Optuna (TPE) over the key parameters of the strongest families;
6. blends of the best members (with own history where lists may repeat), weights by Optuna;
7. Optuna over the hybrid's parameters, if time is left.

The winner is the simplest learned candidate within the noise of the best one on the
protocol in force, unless it does not beat the best baseline beyond that noise (a paired test,
corrected for the families searched): then the baseline is served, and the choice says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import optuna
import pandas as pd

from nextbuy.choice.blending import search_weights
from nextbuy.choice.budget import Budget, Sizes, parse_budget
from nextbuy.choice.candidate import Candidate, weight_variants
from nextbuy.choice.shape import DataShape, measure_shape, target_events
from nextbuy.choice.spaces import FAMILY_SPACES, ease_items, family_defaults, hybrid_space
from nextbuy.choice.trials import Trial, Validation
from nextbuy.choice.verdict import (
    EQUIVALENT_Z,
    Choice,
    complexity,
    family_of,
    gate_z,
    matrix_complexity,
    paired_z,
)
from nextbuy.config import Settings
from nextbuy.errors import DataError
from nextbuy.evaluation.splits import stratified_split
from nextbuy.hybrid.config import default_generators
from nextbuy.models import Recommender
from nextbuy.models.blend import Blend

Step = Callable[[str], None]
DISCOVERY, REPEAT = "discovery", "repeat"
HALF_LIVES: tuple[float | None, ...] = (None, 7.0, 30.0, 90.0, 365.0)
TRENDING_HALF_LIVES = (3.0, 7.0, 14.0, 30.0)
OWN_HISTORY_HALF_LIVES: tuple[float | None, ...] = (None, 30.0, 90.0, 365.0)
TUNED_FAMILIES = 3  # families whose parameters Optuna searches
TUNING_SHARES = (0.5, 0.3, 0.2)  # of the tuning time, by rank
BLEND_MEMBERS = 4  # learned families in a blend, besides own history and a best-seller list
BLEND_TRIALS = 60
HYBRID_SHARE = 0.9  # the hybrid is tried when its expected cost fits this share of what is left
HYBRID_USERS = 5_000  # customers per label window the hybrid trains on
RESERVE = 0.1  # of the budget kept for the blends
MIN_BLEND_TRIALS = 30  # weight trials a blend search gets even when the budget is spent


def holdout(
    events: pd.DataFrame, fraction: float, how: str = "latest", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): the latest `fraction` of dated events ("latest"), or a random
    `fraction` of each customer's events, one always kept for training ("random")."""
    if how == "random":
        split = stratified_split(events, fraction, by="user", seed=seed)
        if split.test.empty:
            raise DataError("too few events per customer to hold any out for validation")
        return split.train, split.test
    dated = events.dropna(subset=["timestamp"])
    if len(dated) < 10:
        raise DataError("too few dated events to hold out a validation window (need ≥ 10)")
    cut = dated["timestamp"].quantile(1 - fraction)
    later = events["timestamp"] >= cut
    if later.all():
        raise DataError("every event has the same time: no earlier events to learn from")
    return events[~later], events[later]


def decide_validation(
    events: pd.DataFrame, weights: Mapping[str, float], settings: Settings
) -> tuple[str, str]:
    """What the choice validates on, and why, in words."""
    configured = settings.training.validation
    if configured != "auto":
        return configured, f"validation = {configured} in the configuration"
    if events["timestamp"].notna().mean() < 0.5:
        return "random", (
            "most events have no date, so there is no latest window: a random tenth of each "
            "customer's events is held out"
        )
    target = target_events(events, weights)
    if target == ["rating"]:
        return "random", (
            "the shop's events are ratings, which say what a customer likes whenever they "
            "rated it: a random tenth of each customer's ratings is held out"
        )
    return "latest", "the latest tenth of the events is held out: what customers did next"


def decide_protocol(shape: DataShape, settings: Settings) -> tuple[str, str]:
    """Whether lists may repeat what a customer had before, and why, in words."""
    pinned = settings.training.exclude_seen
    if pinned is not None:
        protocol = DISCOVERY if pinned else REPEAT
        return protocol, f"exclude_seen = {str(pinned).lower()} in the configuration"
    share, floor = shape.repeat_share, settings.training.repeat_share
    if share >= floor:
        return REPEAT, (
            f"returning customers had had {share:.0%} of what they bought in the held-out "
            f"events (at least {floor:.0%}): lists may repeat earlier purchases"
        )
    return DISCOVERY, (
        f"returning customers had had {share:.0%} of what they bought in the held-out events "
        f"(under {floor:.0%}): lists show only what a customer has not had yet"
    )


@dataclass(frozen=True)
class Earlier:
    """A configuration served before (the version in service): scored first, so a retrain
    starts from it and replaces it only with something better on today's window."""

    stage: str
    candidate: Candidate
    weights: dict[str, float]


def choose(
    events: pd.DataFrame,
    items: pd.DataFrame | None,
    settings: Settings,
    *,
    budget: str | float | None = None,
    earlier: Sequence[Earlier] = (),
    pinned: Candidate | None = None,
    step: Step = lambda _: None,
) -> Choice:
    """Search the model families on the latest window of `events` and pick the winner.

    With `pinned` (a model named in the configuration) nothing is searched: the pinned
    candidate is scored beside the baselines and served whatever its score, with a note
    when a baseline beats it.
    """
    weights = settings.events.all_weights()
    how, held_out = decide_validation(events, weights, settings)
    train, validation = holdout(events, settings.training.validation_fraction, how)
    step("choosing: measuring the data's shape")
    shape = measure_shape(train, validation, items, weights)
    protocol, reason = decide_protocol(shape, settings)
    protocols = (DISCOVERY, REPEAT) if protocol == REPEAT else (DISCOVERY,)
    variants = weight_variants(weights, shape.event_types)
    earlier = [_named_weights(e, variants) for e in earlier]
    validation_set = Validation(
        train, validation, items, variants, target_events(events, weights), protocols,
        settings.events.rating_scale or shape.rating_scale,
    )  # fmt: skip
    if not validation_set.reference[protocol].n_users:
        raise DataError("no customer of the validation window has a purchase to predict")
    seconds = parse_budget(budget if budget is not None else settings.training.budget, len(events))
    limit = Budget(seconds, _sizes(validation_set))
    search = Search(validation_set, shape, settings, protocol, limit, step)
    for found in earlier:
        search.attempt(found.candidate, found.stage)
    reasons = (reason, held_out)
    if pinned is not None:
        return search.pinned(pinned, reasons, variants)
    search.run()
    return search.result(reasons, variants)


def _named_weights(found: Earlier, variants: dict[str, dict[str, float]]) -> Earlier:
    """The earlier configuration with its event weights among the variants (added if new)."""
    for name, weights in variants.items():
        if weights == found.weights:
            return replace(found, candidate=replace(found.candidate, weights=name))
    variants[found.stage] = dict(found.weights)
    return replace(found, candidate=replace(found.candidate, weights=found.stage))


def _sizes(validation: Validation) -> Sizes:
    reference = validation.reference[validation.protocols[-1]]
    return Sizes(
        events=len(validation.train),
        pairs=int(reference.data.matrix.nnz),
        items=reference.data.n_items,
        users=reference.data.n_users,
        scored_users=reference.n_users,
    )


class Search:
    """The trials of one choice, in the order of the plan above."""

    def __init__(
        self,
        validation: Validation,
        shape: DataShape,
        settings: Settings,
        protocol: str,
        budget: Budget,
        step: Step,
    ) -> None:
        self.validation, self.shape, self.settings = validation, shape, settings
        self.protocol, self.budget, self.step = protocol, budget, step
        self.trials: list[Trial] = []
        self.notes: list[str] = []  # what the leaderboard alone would not tell
        self.seen: set[str] = set()
        # the best fitted model of each family (for blends), with its trial
        self.fitted: dict[str, tuple[Trial, Recommender]] = {}
        self.matrix = Candidate("matrix", half_life_days=settings.training.half_life_days)

    # -- the plan -----------------------------------------------------------------------------
    def run(self) -> None:
        self.baselines()
        self.families()
        self.hybrid()
        self.matrices()
        self.tune_families()
        self.blends()
        self.tune_hybrid()

    def baselines(self) -> None:
        for by in ("users", "events"):
            self.attempt(Candidate("popularity", {"by": by}), "baseline")
        for half_life in TRENDING_HALF_LIVES:
            self.attempt(Candidate("trending", {"half_life_days": half_life}), "baseline")
        if REPEAT in self.validation.protocols:
            for half_life in OWN_HISTORY_HALF_LIVES:
                candidate = Candidate("own_history", half_life_days=half_life)
                self.attempt(candidate, "baseline", protocols=(REPEAT,))

    def families(self) -> None:
        sizes = self.budget.sizes
        for model, params in family_defaults(self.shape, sizes, self.budget.seconds):
            self.attempt(self._on_matrix(model, params), "defaults", share=0.25)

    def matrices(self) -> None:
        """Decay, event weights and rating values, tried with the strongest family."""
        best = self.best_family_trial()
        if best is None:
            return
        model, params = best.candidate.model, dict(best.candidate.params)
        base = best.candidate
        options = [Candidate(model, params, h, base.weights, base.ratings) for h in HALF_LIVES]
        options += [
            Candidate(model, params, base.half_life_days, w, base.ratings)
            for w in self.validation.weights
        ]
        if self.shape.rating_scale is not None and self.settings.events.rating_values == "auto":
            options += [
                Candidate(model, params, base.half_life_days, base.weights, mode)
                for mode in ("scaled", "liked")
            ]
        for candidate in options:
            self.attempt(candidate, "matrix", share=0.2)
        tried = [
            t
            for t in self.trials
            if t.candidate.model == model and dict(t.candidate.params) == params and not t.error
        ]
        top = max(tried, key=lambda t: t.value(DISCOVERY))
        # the plainest matrix within the noise of the best: decay and weights must earn it
        equivalent = [t for t in tried if paired_z(top, t, DISCOVERY) < EQUIVALENT_Z]
        plainest = min(equivalent, key=lambda t: (matrix_complexity(t), -t.value(DISCOVERY)))
        self.matrix = plainest.candidate

    def hybrid(self) -> None:
        generators = [asdict(g) for g in default_generators(self.protocol)]
        for generator in generators:
            if generator["name"] == "ease":  # as many items as an EASE fit of the budget
                kept = ease_items(self.budget.sizes, self.budget.seconds)
                generator["params"] = {**generator["params"], "max_items": kept}
        params = {
            "protocol": self.protocol,
            "max_train_users": HYBRID_USERS,
            "generators": generators,
        }
        candidate = self._on_matrix("hybrid", params)
        if not self.budget.affords(candidate, HYBRID_SHARE):
            self.notes.append(
                f"hybrid pipeline not tried: expected {self.budget.expected(candidate):.0f} s, "
                f"{self.budget.left():.0f} s of the budget left"
            )
            return
        self.attempt(candidate, "hybrid")

    def tune_families(self) -> None:
        ranked = self._ranked_families()[:TUNED_FAMILIES]
        tuning = max(self.budget.left() - RESERVE * self.budget.seconds, 0.0)
        for (family, trial), share in zip(ranked, TUNING_SHARES, strict=False):
            start = trial.candidate
            on_matrix = self._on_matrix(start.model, start.params)
            self._optimise(family, on_matrix, tuning * share)

    def blends(self) -> None:
        members = self._blend_members()
        if len(members) < 2:
            return
        matrices = {self.matrix.matrix_key: self.matrix}
        if REPEAT in self.validation.protocols:
            own = self.best_of("own_history", REPEAT)
            if own is not None:
                matrices.setdefault(own.candidate.matrix_key, own.candidate)
        in_force_first = sorted(self.validation.protocols, key=lambda p: p != self.protocol)
        for protocol in in_force_first:
            for matrix in matrices.values():
                self._blend(members, matrix, protocol)

    def tune_hybrid(self) -> None:
        best = self.best_of("hybrid", self.protocol)
        if best is not None:
            self._optimise("hybrid", best.candidate, self.budget.left())

    # -- trials -------------------------------------------------------------------------------
    def attempt(
        self,
        candidate: Candidate,
        stage: str,
        *,
        share: float | None = 1.0,
        protocols: Sequence[str] | None = None,
    ) -> Trial | None:
        """Run the candidate unless it was run already or is not expected to fit in `share`
        of the budget left (None: run it whatever the budget)."""
        if candidate.key in self.seen:
            return None
        if share is not None and not self.budget.affords(candidate, share):
            return None
        self.seen.add(candidate.key)
        spent, total = self.budget.spent(), self.budget.seconds
        self.step(f"choosing ({spent:.0f}/{total:.0f} s): {stage}: {candidate.label()}")
        trial, model = self.validation.run(candidate, stage, protocols)
        self.trials.append(trial)
        if model is not None:  # a failed fit says nothing about what a family costs
            self.budget.record(candidate, trial.seconds)
            self._keep(trial, model)
        return trial

    def _keep(self, trial: Trial, model: Recommender) -> None:
        family = family_of(trial.candidate)
        protocol = DISCOVERY if DISCOVERY in trial.scores else self.protocol
        held = self.fitted.get(family)
        if held is None or trial.value(protocol) > held[0].value(protocol):
            self.fitted[family] = (trial, model)

    def _on_matrix(self, model: str, params: Mapping[str, Any]) -> Candidate:
        base = self.matrix
        return Candidate(model, dict(params), base.half_life_days, base.weights, base.ratings)

    def best_of(self, family: str, protocol: str) -> Trial | None:
        found = [
            t for t in self.trials if family_of(t.candidate) == family and protocol in t.scores
        ]
        return max(found, key=lambda t: t.value(protocol), default=None)

    def best_family_trial(self) -> Trial | None:
        """The best single learned family so far on new items (no blend, no hybrid)."""
        found = [
            t
            for t in self.trials
            if not t.candidate.baseline
            and DISCOVERY in t.scores
            and t.candidate.model not in ("blend", "hybrid")
        ]
        return max(found, key=lambda t: t.value(DISCOVERY), default=None)

    def _ranked_families(self) -> list[tuple[str, Trial]]:
        best: dict[str, Trial] = {}
        for trial in self.trials:
            family = family_of(trial.candidate)
            if trial.candidate.baseline or family not in FAMILY_SPACES or trial.error:
                continue
            if family not in best or trial.value(DISCOVERY) > best[family].value(DISCOVERY):
                best[family] = trial
        ranked = sorted(best.items(), key=lambda kv: -kv[1].value(DISCOVERY))
        return [(f, t) for f, t in ranked if math.isfinite(t.value(DISCOVERY))]

    def _optimise(self, family: str, start: Candidate, seconds: float) -> None:
        """Optuna's TPE over the family's space, starting from `start`, for `seconds`."""
        space = hybrid_space if family == "hybrid" else FAMILY_SPACES[family]
        protocol = self.protocol if family == "hybrid" else DISCOVERY
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=len(self.trials))
        )
        until = self.budget.spent() + seconds
        for _ in range(200):
            trial = study.ask()
            params = {
                **dict(start.params),
                **space(trial, self.shape, self.budget.sizes, start.params),
            }
            candidate = Candidate(
                start.model, params, start.half_life_days, start.weights, start.ratings
            )
            if self.budget.spent() + self.budget.expected(candidate) > until:
                break
            run = self.attempt(candidate, "search")
            value = run.value(protocol) if run is not None else None
            if value is None or not math.isfinite(value):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)

    # -- blends -------------------------------------------------------------------------------
    def _blend_members(self) -> list[tuple[Trial, Recommender]]:
        learned = [
            self.fitted[f]
            for f, _ in self._ranked_families()
            if f in self.fitted and self.fitted[f][0].value(DISCOVERY) > 0
        ][:BLEND_MEMBERS]
        popular = self._best_bestseller()
        members = list(learned)
        if popular is not None:
            members.append(popular)
        if REPEAT in self.validation.protocols and "own_history" in self.fitted:
            members.insert(0, self.fitted["own_history"])
        return members

    def _best_bestseller(self) -> tuple[Trial, Recommender] | None:
        found = [self.fitted[f] for f in ("trending", "popularity") if f in self.fitted]
        return max(found, key=lambda tm: tm[0].value(self.protocol), default=None)

    def _blend(
        self, members: list[tuple[Trial, Recommender]], matrix: Candidate, protocol: str
    ) -> None:
        if protocol == DISCOVERY:
            members = [m for m in members if m[0].candidate.model != "own_history"]
        if len(members) < 2:
            return
        self.step(f"choosing: blend weights for {protocol} lists")
        fitted = [self._refit_on(trial.candidate, model, matrix) for trial, model in members]
        setup = self.validation.setup(matrix, protocol)
        named = [
            (trial.candidate.model, model)
            for (trial, _), model in zip(members, fitted, strict=True)
        ]
        deadline = self.budget.spent() + max(self.budget.left(), 0.0) / 2

        def keep_going(number: int) -> bool:
            return number < MIN_BLEND_TRIALS or self.budget.spent() < deadline

        found = search_weights(named, setup, BLEND_TRIALS, keep_going)
        weights = found.weights
        specs = [
            {"model": t.candidate.model, "params": dict(t.candidate.params)} for t, _ in members
        ]
        params = {
            "members": specs,
            "weights": [round(w, 4) for w in weights],
            "normalise": "zscore",
        }
        candidate = Candidate(
            "blend", params, matrix.half_life_days, matrix.weights, matrix.ratings
        )
        if candidate.key in self.seen:
            return
        self.seen.add(candidate.key)
        blend = Blend(fitted, weights, "zscore", refit=False)
        trial = self.validation.run_fitted(blend, candidate, "blend")
        trial.fit_seconds = sum(t.fit_seconds for t, _ in members)  # what a refit costs
        # scored as its weights would do on customers the search did not see
        scores = trial.scores[protocol]
        scores["in-sample ndcg@10"] = scores["ndcg@10"]
        scores["ndcg@10"] = float(found.out_of_fold.mean())
        trial.per_user[protocol] = found.out_of_fold.astype(np.float32)
        self.trials.append(trial)

    def _refit_on(self, candidate: Candidate, model: Recommender, matrix: Candidate) -> Recommender:
        if candidate.matrix_key == matrix.matrix_key:
            return model
        moved = Candidate(
            candidate.model, candidate.params, matrix.half_life_days, matrix.weights,
            matrix.ratings,
        )  # fmt: skip
        return self.validation.fit(moved)

    # -- the verdict --------------------------------------------------------------------------
    def pinned(
        self,
        candidate: Candidate,
        reasons: tuple[str, str],
        variants: dict[str, dict[str, float]],
    ) -> Choice:
        """Score the configured model beside the baselines; it is served in any case."""
        notes = list(self.notes)
        self.baselines()
        trial = self.attempt(candidate, "configured", share=None) or next(
            t
            for t in self.trials
            if t.candidate.key == candidate.key  # also in service
        )
        if trial.error:
            raise DataError(f"model {candidate.model!r} could not be trained: {trial.error}")
        choice = self.result(reasons, variants)
        choice.winner, choice.notes = trial, notes  # no selection: its notes do not apply
        base = choice.best_baseline()
        if base is not None and base.value(self.protocol) >= trial.value(self.protocol):
            choice.notes.append(
                f"the configured model scores {trial.value(self.protocol):.4f} on the validation "
                f"window, not above the baseline {base.candidate.label()} "
                f"({base.value(self.protocol):.4f}); remove `model` from [training] to let "
                "`nextbuy train` choose"
            )
        return choice

    def _simplest_within_noise(self, learned: list[Trial]) -> Trial | None:
        protocol = self.protocol
        best = max(learned, key=lambda t: t.value(protocol), default=None)
        if best is None:
            return None
        equivalent = [t for t in learned if paired_z(best, t, protocol) < EQUIVALENT_Z]
        simplest = min(equivalent, key=lambda t: (complexity(t), -t.value(protocol)))
        if simplest is not best:
            z = paired_z(best, simplest, protocol)
            self.notes.append(
                f"{best.candidate.label()} scored {best.value(protocol):.4f}, within the noise "
                f"of the simpler {simplest.candidate.label()} ({simplest.value(protocol):.4f}, "
                f"z = {z:.2f} < {EQUIVALENT_Z:g}): the simpler one is served"
            )
        return simplest

    def result(self, reasons: tuple[str, str], variants: dict[str, dict[str, float]]) -> Choice:
        """The verdict; `reasons` say why lists may repeat or not, and what was held out."""
        protocol = self.protocol
        scored = [t for t in self.trials if protocol in t.scores and not t.error]
        if not scored:
            raise DataError("no candidate could be fitted and scored on the validation window")
        baselines = [t for t in scored if t.candidate.baseline]
        learned = [t for t in scored if not t.candidate.baseline]
        best_base = max(baselines, key=lambda t: t.value(protocol), default=None)
        best = self._simplest_within_noise(learned)
        if best is not None and best_base is not None:
            z, needed = paired_z(best, best_base, protocol), gate_z(learned)
            if z < needed:
                self.notes.append(
                    f"the best learned candidate, {best.candidate.label()} "
                    f"({best.value(protocol):.4f}), does not beat {best_base.candidate.label()} "
                    f"({best_base.value(protocol):.4f}) beyond the noise of the validation "
                    f"window (z = {z:.2f}, {needed:.2f} needed): the baseline is served"
                )
                best = best_base
        best = best or best_base
        assert best is not None
        return Choice(
            shape=self.shape,
            protocol=protocol,
            protocol_reason=reasons[0],
            validation_reason=reasons[1],
            protocols=self.validation.protocols,
            trials=self.trials,
            winner=best,
            weights=variants,
            rating_scale=self.validation.rating_scale,
            budget_seconds=self.budget.seconds,
            seconds=self.budget.spent(),
            notes=self.notes,
        )
