"""Cold start, measured honestly: users with almost no history and brand-new users whose
first basket is their session so far (`cold_users`, `first_session`), items first seen in
the test period (`cold_items`), and the content encodings compared on them
(`content_variants`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nextbuy.data.content import ContentFeatures
from nextbuy.data.embeddings import embeddings_available
from nextbuy.data.matrix import from_frame
from nextbuy.evaluation import metrics
from nextbuy.evaluation.setup import EvaluationSetup, prepare
from nextbuy.evaluation.splits import Split
from nextbuy.hybrid.evaluate import (
    METRICS,
    K,
    ProtocolResult,
    Tuned,
    model_lists,
    score_lists,
    top_of,
)
from nextbuy.hybrid.features import prepare_events
from nextbuy.hybrid.pipeline import first_baskets
from nextbuy.models.content_model import ContentModel, FactorMapping, extend_factors


def training_counts(
    split: Split, user_ids: np.ndarray, weights: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Positive-weight training events and baskets per user (0 for users new in the test)."""
    train = prepare_events(split.train, weights)
    train = train.loc[train["weight"] > 0]
    index = pd.Index(user_ids).astype(str)
    events = train["user_id"].value_counts().reindex(index).fillna(0).to_numpy()
    baskets = train.groupby("user_id")["basket"].nunique().reindex(index).fillna(0).to_numpy()
    return events, baskets


def cold_users(
    result: ProtocolResult, split: Split, weights: Mapping[str, float], max_events: int = 2
) -> pd.DataFrame:
    """Every list of `result`, scored on users with at most `max_events` training events.

    An Online Retail invoice line is an event, so a customer with one small order already
    has several; the segment of customers with at most that many orders (baskets) is given
    as well.
    """
    events, baskets = training_counts(split, result.setup.user_ids, weights)
    segments = {
        f"1-{max_events} training events": np.flatnonzero((events >= 1) & (events <= max_events)),
        f"1-{max_events} training orders": np.flatnonzero((baskets >= 1) & (baskets <= max_events)),
        "no training event (new)": np.flatnonzero(events == 0),
    }
    rows = []
    for segment, chosen in segments.items():
        if not len(chosen):
            continue
        for name, top in result.lists.items():
            rows.append(
                {"segment": segment, "model": name, **score_lists(top, result.setup, chosen)}
            )
    return pd.DataFrame(rows)


def first_session(
    split: Split,
    items: pd.DataFrame,
    result: ProtocolResult,
    tuned: Mapping[str, Tuned],
    weights: Mapping[str, float],
) -> pd.DataFrame:
    """New users: their first test basket is the session so far; truth is what they bought later.

    Single models get that basket as a history row; the hybrid gets it as events since the
    cutoff with the request time just after the basket, as a live request would.
    """
    assert result.hybrid is not None
    users, first, now, later = _first_baskets(split, weights)
    if not len(users):
        return pd.DataFrame()
    setup = _session_setup(result.setup, first, later, users)
    rows = []
    for name, choice in tuned.items():
        model = choice.build()
        data = from_frame(split.train, weights or None, choice.half_life_days)
        with threadpool_limits(2):
            model.fit(data, items)
            history = _history_rows(first, users, data.item_ids)
            top = model.recommend(history, K, history).items
        ids = [[str(data.item_ids[i]) for i in row if i >= 0] for row in top]
        rows.append({"model": name, **_session_scores(setup, ids)})
    # each customer is asked about as of just after their own first basket
    scored = result.hybrid.score(list(users), extra_events=first, now=now)
    hybrid_ids = result.hybrid.top_ids(scored, scored.top(K))
    rows.append({"model": "hybrid", **_session_scores(setup, hybrid_ids)})
    return pd.DataFrame(rows).sort_values("ndcg", ascending=False).reset_index(drop=True)


def _first_baskets(
    split: Split, weights: Mapping[str, float]
) -> tuple[np.ndarray, pd.DataFrame, list[pd.Timestamp], pd.DataFrame]:
    """Customers new in the test period with a later basket: their first basket, the moment
    after it, and what they bought later that the first basket did not hold."""
    test = prepare_events(split.test, weights)
    known = pd.Index(pd.unique(split.train["user_id"].dropna().astype(str)))
    new = test.loc[(test["weight"] > 0) & test["user_id"].notna() & ~test["user_id"].isin(known)]
    users, first, now, later = first_baskets(new)
    seen = pd.MultiIndex.from_frame(first[["user_id", "item_id"]])
    later = later.loc[~pd.MultiIndex.from_frame(later[["user_id", "item_id"]]).isin(seen)]
    keep = pd.Index(users).isin(pd.unique(later["user_id"]))
    now = [t for t, k in zip(now, keep, strict=True) if k]
    users = users[keep]
    return users, first.loc[first["user_id"].isin(users)], now, later


@dataclass
class _SessionSetup:
    truth: sp.csr_matrix
    index: dict[str, int]
    n_train_items: int


def _session_setup(
    base: EvaluationSetup, first: pd.DataFrame, later: pd.DataFrame, users: np.ndarray
) -> _SessionSetup:
    ids = list(pd.unique(pd.concat([pd.Series(base.data.item_ids), later["item_id"].astype(str)])))
    index = {str(t): i for i, t in enumerate(ids)}
    rows = pd.Index(users).get_indexer(later["user_id"])
    cols = np.array([index[str(t)] for t in later["item_id"]])
    truth = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), len(ids)))
    truth.data[:] = 1.0
    return _SessionSetup(truth, index, base.data.n_items)


def _session_scores(setup: _SessionSetup, ids: list[list[str]]) -> dict[str, float]:
    outside = len(setup.index) + 1
    top = np.full((len(ids), K), -1, np.int64)
    for r, row in enumerate(ids):
        cols = [setup.index.get(t, outside) for t in row[:K]]
        top[r, : len(cols)] = cols
    truth = sp.csr_matrix(setup.truth)
    truth.sum_duplicates()
    truth.data[:] = 1.0
    means = metrics.summarise(metrics.ranking_metrics(top, truth, (K,)))
    out = {m: means[f"{m}@{K}"] for m in METRICS}
    out["coverage"] = metrics.catalog_coverage(top, setup.n_train_items)
    out["users"] = len(ids)
    return out


def _history_rows(events: pd.DataFrame, users: np.ndarray, item_ids: np.ndarray) -> sp.csr_matrix:
    rows = pd.Index(users).get_indexer(events["user_id"])
    cols = pd.Index(item_ids).get_indexer(events["item_id"].astype(str))
    ok = (rows >= 0) & (cols >= 0)
    out = sp.csr_matrix(
        (np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=(len(users), len(item_ids))
    )
    out.sum_duplicates()
    return out


def cold_items(
    split: Split,
    items: pd.DataFrame,
    tuned: Mapping[str, Tuned],
    weights: Mapping[str, float],
    content: ContentFeatures | None = None,
    seeds: int = 20,
) -> pd.DataFrame:
    """Rank the catalogue's items that had no training interaction, for the users who bought
    one of them in the test period (NDCG@10 against those purchases)."""
    als_choice = tuned.get("als")
    content = content or ContentFeatures.build(items, embeddings="none")
    catalog = list(content.item_ids)
    train_items = set(split.train["item_id"].astype(str))
    cold = np.array([i for i, t in enumerate(catalog) if t not in train_items])
    hl = None if als_choice is None else als_choice.half_life_days
    data = from_frame(split.train, weights or None, hl, item_ids=catalog)
    test = split.test.assign(user_id=split.test["user_id"].astype(str))
    positive = test["event_type"].map(dict(weights)).fillna(0.0) > 0
    bought = test.loc[positive & test["item_id"].astype(str).isin(set(content.item_ids[cold]))]
    users = np.asarray(pd.unique(bought["user_id"]), dtype=object)
    users = users[pd.Index(users).isin(pd.Index(data.user_ids))]  # profiles need a history
    if not len(users) or not len(cold):
        return pd.DataFrame()
    histories = data.rows(list(users))
    position = {c: j for j, c in enumerate(cold)}
    truth_rows = pd.Index(users).get_indexer(bought["user_id"])
    truth_cols = [position.get(data.item_index.get(str(t), -1), -1) for t in bought["item_id"]]
    ok = (truth_rows >= 0) & (np.array(truth_cols) >= 0)
    truth = sp.csr_matrix(
        (np.ones(ok.sum()), (truth_rows[ok], np.array(truth_cols)[ok])),
        shape=(len(users), len(cold)),
    )
    truth.sum_duplicates()
    truth.data[:] = 1.0
    keep = metrics.users_with_truth(truth)
    scores = _cold_scores(data, histories, content, cold, als_choice, seeds)
    rows = []
    for name, per_seed in scores.items():
        values = [
            metrics.summarise(metrics.ranking_metrics(top_of(s)[keep], truth[keep], (K,)))
            for s in per_seed
        ]
        row = {m: float(np.mean([v[f"{m}@{K}"] for v in values])) for m in METRICS}
        rows.append({"model": name, **row, "users": len(keep), "cold_items": len(cold)})
    return pd.DataFrame(rows).sort_values("ndcg", ascending=False).reset_index(drop=True)


def _cold_scores(
    data: Any,
    histories: sp.csr_matrix,
    content: ContentFeatures,
    cold: np.ndarray,
    als_choice: Tuned | None,
    seeds: int,
) -> dict[str, list[np.ndarray]]:
    """Scores over the cold items per method; methods without signal are random orders."""
    rng = np.random.default_rng(0)
    shape = (histories.shape[0], len(cold))
    no_signal = [rng.random(shape) for _ in range(seeds)]
    # Popularity and collaborative-only models score every cold item alike (-inf or 0): their
    # list is any order, so their expected NDCG is a random order's.
    out: dict[str, list[np.ndarray]] = {
        "popularity (no signal: random order)": no_signal,
        "als only (no signal: random order)": no_signal,
    }
    with threadpool_limits(2):
        model = ContentModel(embeddings="none").use_features(content).fit(data)
        content_scores = model.score(histories)[:, cold]
        out["content"] = [content_scores]
        if als_choice is not None:
            als = als_choice.build().fit(data)
            vectors = content.aligned(list(data.item_ids))
            users = np.bincount(data.matrix.indices, minlength=data.n_items)
            mapping = FactorMapping().fit(vectors, als.item_factors, als.trained, users)  # type: ignore[attr-defined]
            mapped = extend_factors(als, mapping, vectors).score(histories)[:, cold]
            out["als + content→factor mapping"] = [mapped]
            blend = _z(content_scores) + _z(mapped)
            out["content + mapped als"] = [blend]
    return out


def _z(scores: np.ndarray) -> np.ndarray:
    safe = np.where(np.isfinite(scores), scores, np.nan)
    mean = np.nanmean(safe, axis=1, keepdims=True)
    std = np.nanstd(safe, axis=1, keepdims=True)
    return np.nan_to_num((safe - mean) / np.where(std > 0, std, 1.0), nan=-10.0)


def content_variants(
    split: Split, items: pd.DataFrame, tuned: Mapping[str, Tuned], weights: Mapping[str, float]
) -> pd.DataFrame:
    """TF-IDF content against TF-IDF + sentence embeddings (when the extra is installed):
    the content model on the discovery protocol, on new items, and the cost of encoding."""
    variants: dict[str, str] = {"TF-IDF + categorical + price level": "none"}
    if embeddings_available():
        variants["+ all-MiniLM-L6-v2 embeddings"] = "minilm"
    choice = tuned["content"]
    setup = prepare(
        split.train, split.test, "discovery", weights=weights, half_life_days=choice.half_life_days
    )
    rows = []
    for label, embeddings in variants.items():
        start = time.perf_counter()
        content = ContentFeatures.build(items, embeddings=embeddings)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        ContentFeatures.build(items, embeddings=embeddings, previous=content)  # type: ignore[arg-type]
        again = time.perf_counter() - start
        model = ContentModel(**{**choice.params, "embeddings": embeddings}).use_features(content)
        discovery = score_lists(model_lists(model, setup, items), setup)["ndcg"]
        cold = cold_items(split, items, tuned, weights, content=content, seeds=1).set_index("model")
        rows.append(
            {
                "content": label,
                "discovery_ndcg": discovery,
                "new_items_content_ndcg": cold.loc["content", "ndcg"],
                "new_items_content_plus_mapped_als_ndcg": cold.loc["content + mapped als", "ndcg"],
                "build_seconds": seconds,
                "rebuild_unchanged_seconds": again,
            }
        )
    return pd.DataFrame(rows)
