"""Blend weights searched with Optuna on the validation window, each member scored once.

Every member's normalised scores are computed once per block of customers; only each
customer's pool (the union of every member's top `POOL` items) is kept, so a trial is a
weighted sum over the pools and a top-10, whatever the size of the catalogue. An item outside
every member's top `POOL` could not reach a top-10 of a blend of them unless weights were
extreme, which the search does not try.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from nextbuy.evaluation import metrics
from nextbuy.evaluation.setup import EvaluationSetup, fill_with_popular
from nextbuy.models.base import BLOCK_SCORES, Recommender
from nextbuy.models.blend import normalise_rows

POOL = 100
K = 10
NORMALISE = "zscore"
# weights are searched as log10(weight): a member can count as much as the first (1), a bit,
# or only break the first's ties (0.001); below OFF_LOG it is left out
LOG_RANGE = (-3.0, 0.5)
OFF_LOG = -2.9
# a negative weight on a best-seller list steers a blend away from the obvious
SIGNED_MEMBERS = frozenset({"popularity", "trending"})


@dataclass
class Pools:
    """Per customer, the pooled items and each member's normalised score on them."""

    items: np.ndarray  # int64 (users, width), -1 where the pool is shorter
    values: np.ndarray  # float32 (members, users, width)

    @classmethod
    def build(cls, members: Sequence[Recommender], setup: EvaluationSetup) -> Pools:
        n_users, n_items = setup.histories.shape[0], setup.data.n_items
        width = POOL * len(members)
        items = np.full((n_users, width), -1, np.int64)
        values = np.zeros((len(members), n_users, width), np.float32)  # padding: items < 0
        block = max(1, BLOCK_SCORES // max(n_items * len(members), 1))
        for start in range(0, n_users, block):
            stop = min(start + block, n_users)
            allowed = _allowed(setup, start, stop)
            parts = [_normalised(m, setup, start, stop) for m in members]
            pooled = _pool([np.where(ok & allowed, v, -np.inf) for v, ok in parts])
            items[start:stop, : pooled.shape[1]] = pooled
            safe = np.maximum(pooled, 0)
            for m, (part, _) in enumerate(parts):
                got = np.take_along_axis(part, safe, axis=1)
                values[m, start:stop, : pooled.shape[1]] = np.where(pooled >= 0, got, 0.0)
        return cls(items, values)

    def lists(self, weights: Sequence[float], setup: EvaluationSetup) -> np.ndarray:
        total = np.tensordot(np.asarray(weights, np.float32), self.values, axes=1)
        total[self.items < 0] = -np.inf
        width = min(K, total.shape[1])
        best = np.argsort(-total, axis=1, kind="stable")[:, :width]
        top = np.take_along_axis(self.items, best, axis=1)
        top[~np.isfinite(np.take_along_axis(total, best, axis=1))] = -1
        return fill_with_popular(top, setup)


def _normalised(
    member: Recommender, setup: EvaluationSetup, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """The member's scores on the blend's common scale (as `Blend` puts them: an item the
    member cannot recommend sits below its lowest), and where the member can recommend."""
    scores = member.score(setup.histories[start:stop])
    return normalise_rows(scores, NORMALISE), np.isfinite(scores)


def _allowed(setup: EvaluationSetup, start: int, stop: int) -> np.ndarray:
    n = stop - start
    if setup.exclude is None:
        return np.ones((n, setup.data.n_items), bool)
    return ~setup.exclude[start:stop].toarray().astype(bool)


def _pool(parts: list[np.ndarray]) -> np.ndarray:
    """Each row's distinct items among every part's top POOL, -1 padded."""
    picks = []
    for part in parts:
        width = min(POOL, part.shape[1])
        top = np.argpartition(-part, width - 1, axis=1)[:, :width]
        finite = np.isfinite(np.take_along_axis(part, top, axis=1))
        picks.append(np.where(finite, top, -1))
    pooled = np.sort(np.concatenate(picks, axis=1), axis=1)
    repeated = np.zeros_like(pooled, bool)
    repeated[:, 1:] = pooled[:, 1:] == pooled[:, :-1]
    pooled[repeated] = -1
    return pooled


def _starting_points(n: int) -> list[list[float]]:
    """log10 weights of the first trials: the first member alone, then with the others only
    breaking its ties, touching it lightly, or counting alike, and each other one beside it."""
    others = n - 1
    points = [[LOG_RANGE[0]] * others, [-2.0] * others, [-1.0] * others, [0.0] * others]
    for i in range(others):
        points.append([-0.5 if j == i else LOG_RANGE[0] for j in range(others)])
    return points


def _weight(trial: optuna.Trial, i: int, signed: bool) -> float:
    log = trial.suggest_float(f"w{i}", *LOG_RANGE)
    weight = 0.0 if log < OFF_LOG else 10.0**log
    if signed and trial.suggest_categorical(f"s{i}", [1, -1]) < 0:
        weight = -weight
    return weight


@dataclass
class BlendWeights:
    """The weights to serve, and an honest NDCG of the search that found them."""

    weights: list[float]  # tuned on every customer of the window; the first member's is 1
    # each customer's NDCG@10 under weights tuned on the other half of the customers: what
    # searching the weights is worth on customers it did not see (the in-sample best of
    # dozens of weightings would flatter the blend against single models)
    out_of_fold: np.ndarray


def search_weights(
    members: Sequence[tuple[str, Recommender]],
    setup: EvaluationSetup,
    n_trials: int,
    keep_going: Callable[[int], bool],
    seed: int = 0,
) -> BlendWeights:
    """Weights (first member fixed at 1) searched with TPE for the best validation NDCG@10;
    the first member alone and equal weights are among the first trials. The search runs on
    each half of the customers (cross-fitting: each half scored with the other's weights)
    and then on all of them; `keep_going(n)` is asked before the n-th trial of each."""
    pools = Pools.build([m for _, m in members], setup)
    folds = np.arange(setup.n_users) % 2
    signed = [i for i, (name, _) in enumerate(members) if i and name in SIGNED_MEMBERS]

    def per_user(weights: Sequence[float]) -> np.ndarray:
        top = pools.lists(weights, setup)
        return metrics.ranking_metrics(top, setup.truth, (K,))[f"ndcg@{K}"]

    def tune(rows: np.ndarray) -> list[float]:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        for start in _starting_points(len(members)):
            point: dict[str, float] = {f"w{i}": w for i, w in enumerate(start, start=1)}
            study.enqueue_trial({**point, **{f"s{i}": 1 for i in signed}})
        best, best_value = [1.0] * len(members), -np.inf
        for number in range(n_trials):
            if not keep_going(number):
                break
            trial = study.ask()
            weights = [1.0]
            for i, (name, _) in enumerate(members[1:], start=1):
                weights.append(_weight(trial, i, name in SIGNED_MEMBERS))
            found = float(per_user(weights)[rows].mean())
            study.tell(trial, found)
            if found > best_value:
                best, best_value = weights, found
        return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_of_fold = np.zeros(setup.n_users)
    for fold in (0, 1):
        other = folds != fold
        out_of_fold[~other] = per_user(tune(other))[~other]
    return BlendWeights(tune(np.ones(setup.n_users, bool)), out_of_fold)
