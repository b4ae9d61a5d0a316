"""What every evaluation runs on: a split's training matrix and test truth under a protocol
(`prepare`), and the top-k lists a model gives its users, topped up with best sellers as a
storefront would (`recommend_lists`, `fill_with_popular`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.data.matrix import InteractionMatrix, RatingValues, from_frame
from nextbuy.data.schema import DEFAULT_EVENT_WEIGHTS
from nextbuy.errors import ConfigError, DataError
from nextbuy.evaluation import metrics
from nextbuy.models.base import EXCLUDED_HEADROOM, Recommender, TopK, without_excluded

Protocol = Literal["standard", "discovery", "repeat"]
PROTOCOLS: tuple[str, ...] = ("standard", "discovery", "repeat")
IMPLICIT_EVENT = "interaction"  # event type given to frames that have none


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class EvaluationSetup:
    """What every model is scored against; built once per split and protocol."""

    data: InteractionMatrix  # the training matrix models are fitted on
    protocol: str
    user_ids: np.ndarray  # the evaluated users
    histories: sp.csr_matrix  # their training rows (empty for users new in test)
    exclude: sp.csr_matrix | None  # what may not be recommended (None under "repeat")
    truth: sp.csr_matrix  # evaluated users × (training items, then items new in test)
    truth_item_ids: np.ndarray
    train_events: np.ndarray  # training events of each evaluated user (0 = new user)
    popularity: np.ndarray  # distinct training users per training item
    summary: dict[str, Any] = field(default_factory=dict)
    events: pd.DataFrame | None = None  # the training events, for models that need them

    @property
    def n_users(self) -> int:
        return int(self.truth.shape[0])


def prepare(
    train: pd.DataFrame,
    test: pd.DataFrame,
    protocol: Protocol = "discovery",
    *,
    weights: Mapping[str, float] | None = None,
    half_life_days: float | None = None,
    relevant_events: Sequence[str] | None = None,
    ratings: RatingValues | None = None,
    data: InteractionMatrix | None = None,
) -> EvaluationSetup:
    """Build the training matrix, the evaluated users, their histories, exclusions and truth.

    Relevant test events are those of `relevant_events`, by default every event type with a
    positive weight (so cancellations and removals from a cart are never "relevant").
    `ratings` says how a rating's value weighs in the training matrix. `data`, when given, is
    that matrix already built from `train` with these settings (another protocol's setup).
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    weights = _weights_for(train, weights)
    if data is None:
        data = from_frame(_with_event_type(train), weights, half_life_days, ratings=ratings)
    if data.n_users == 0 or data.n_items == 0:
        raise DataError("the training part of the split holds no weighted interaction")
    relevant = _relevant_rows(_with_event_type(test), weights, relevant_events)
    user_ids = _extend(data.user_ids, relevant["user_id"])
    item_ids = _extend(data.item_ids, relevant["item_id"])
    truth = _binary(relevant, user_ids, item_ids)
    seen = _resize(data.matrix, truth.shape)
    if protocol == "discovery":
        truth = metrics.remove_seen(truth, seen)
    users = metrics.users_with_truth(truth)
    histories = _resize(data.matrix, (truth.shape[0], data.n_items))[users]
    exclude = None if protocol == "repeat" else sp.csr_matrix(histories, dtype=bool)
    events = _resize(data.counts, (truth.shape[0], data.n_items))[users].sum(axis=1)
    setup = EvaluationSetup(
        data=data,
        protocol=protocol,
        user_ids=user_ids[users],
        histories=sp.csr_matrix(histories),
        exclude=exclude,
        truth=sp.csr_matrix(truth[users]),
        truth_item_ids=item_ids,
        train_events=np.asarray(events).ravel(),
        popularity=np.bincount(data.matrix.indices, minlength=data.n_items).astype(np.float64),
        events=train,
    )
    setup.summary.update(_setup_summary(setup, relevant))
    return setup


def _weights_for(train: pd.DataFrame, weights: Mapping[str, float] | None) -> dict[str, float]:
    out = dict(DEFAULT_EVENT_WEIGHTS if weights is None else weights)
    if "event_type" not in train.columns:
        out.setdefault(IMPLICIT_EVENT, 1.0)
    return out


def _with_event_type(df: pd.DataFrame) -> pd.DataFrame:
    """Frames without event types are taken as one kind of positive interaction."""
    return df if "event_type" in df.columns else df.assign(event_type=IMPLICIT_EVENT)


def _relevant_rows(
    test: pd.DataFrame, weights: Mapping[str, float], relevant_events: Sequence[str] | None
) -> pd.DataFrame:
    chosen = (
        set(relevant_events)
        if relevant_events is not None
        else {e for e, w in weights.items() if w > 0}
    )
    keep = test["user_id"].notna() & test["event_type"].isin(sorted(chosen))
    rows = test.loc[keep, ["user_id", "item_id"]]
    return rows.astype({"user_id": str, "item_id": str})


def _extend(known: np.ndarray, values: pd.Series) -> np.ndarray:
    """`known` ids followed by the values not among them, in order of first appearance."""
    unique = pd.unique(values.to_numpy(dtype=object))
    fresh = pd.Index(unique).difference(pd.Index(known), sort=False)
    return np.concatenate([np.asarray(known, dtype=object), np.asarray(fresh, dtype=object)])


def _binary(rows: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    r = pd.Index(user_ids).get_indexer(rows["user_id"])
    c = pd.Index(item_ids).get_indexer(rows["item_id"])
    out = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(user_ids), len(item_ids)))
    out.sum_duplicates()
    out.data[:] = 1.0
    return out


def _resize(matrix: sp.csr_matrix, shape: tuple[int, int]) -> sp.csr_matrix:
    """The matrix with zero rows/columns appended (or columns cut) to reach `shape`."""
    m = sp.csr_matrix(matrix)
    coo = m.tocoo()
    keep = (coo.row < shape[0]) & (coo.col < shape[1])
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=shape)


# --------------------------------------------------------------------------- lists


def recommend_lists(
    model: Recommender, setup: EvaluationSetup, k: int, *, fill: bool = True
) -> tuple[np.ndarray, float]:
    """Top-k item indices of every evaluated user, and the seconds the model took."""
    start = time.perf_counter()
    if model.needs_events:
        top = _lists_by_user(model, setup, k)
    else:
        top = model.recommend(setup.histories, k, setup.exclude).items
    seconds = time.perf_counter() - start
    return (fill_with_popular(top, setup) if fill else top), seconds


def fit_on_events(model: Any, setup: EvaluationSetup, items: pd.DataFrame | None) -> None:
    # the hybrid learns from the dated training events, not from the matrix
    if setup.events is None:
        raise DataError(f"model {model.name!r} needs the training events")
    discovery = setup.protocol == "discovery"
    model.fit_events(setup.events, items, dict(setup.data.weights), discovery)


def _lists_by_user(model: Any, setup: EvaluationSetup, k: int) -> np.ndarray:
    """An event model ranks users by id over its own item index: mapped onto the matrix's
    columns (an item the matrix lacks is left out; popular items fill the gap). Items the
    setup excludes are dropped, so a model that may repeat purchases is scored on what it
    lists beyond them."""
    extra = 0 if setup.exclude is None else EXCLUDED_HEADROOM
    top = model.recommend_users(list(setup.user_ids), k + extra)
    own = np.asarray(model.stage_items, dtype=object)
    column = np.asarray([setup.data.item_index.get(str(t), -1) for t in own], np.int64)
    mapped = TopK(np.where(top.items >= 0, column[np.maximum(top.items, 0)], -1), top.scores)
    if setup.exclude is None:
        return mapped.items
    return without_excluded(mapped, setup.exclude, k).items


def fill_with_popular(top: np.ndarray, setup: EvaluationSetup) -> np.ndarray:
    """Pad short lists with the most popular training items not excluded nor already listed."""
    top = np.array(top, dtype=np.int64)
    short = np.flatnonzero((top < 0).any(axis=1))
    if not len(short):
        return top
    ranked = np.argsort(-setup.popularity, kind="stable")
    ranked = ranked[setup.popularity[ranked] > 0]
    for row in short:
        listed = top[row][top[row] >= 0]
        banned = listed
        if setup.exclude is not None:
            start, stop = setup.exclude.indptr[row], setup.exclude.indptr[row + 1]
            banned = np.concatenate([listed, setup.exclude.indices[start:stop]])
        pool = ranked[: top.shape[1] + len(banned)]
        extra = pool[~np.isin(pool, banned)][: top.shape[1] - len(listed)]
        top[row] = -1
        top[row, : len(listed) + len(extra)] = np.concatenate([listed, extra])
    return top


def _setup_summary(setup: EvaluationSetup, relevant: pd.DataFrame) -> dict[str, Any]:
    data = setup.data
    known_users = pd.Index(data.user_ids)
    known_items = pd.Index(data.item_ids)
    new_user_mask = ~pd.Index(setup.user_ids).isin(known_users)
    truth_cols = setup.truth.indices
    return {
        "train_users": data.n_users,
        "train_items": data.n_items,
        "relevant_test_interactions": len(relevant),
        "relevant_test_users": int(relevant["user_id"].nunique()),
        "relevant_on_new_items": int((~relevant["item_id"].isin(known_items)).sum()),
        "users_evaluated": setup.n_users,
        "new_users_evaluated": int(new_user_mask.sum()),
        "truth_pairs": int(setup.truth.nnz),
        "truth_pairs_on_new_items": int((truth_cols >= data.n_items).sum()),
    }
