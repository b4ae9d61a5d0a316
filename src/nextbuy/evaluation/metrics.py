"""Offline metrics over top-k lists: accuracy, beyond-accuracy and per-segment breakdowns.

Inputs use internal indices throughout:

- ``top``: int array (n_users, k) of item indices, best first; ``-1`` pads short lists.
- ``relevant``: CSR (n_users, n_items); a stored nonzero marks a relevant item (the value is
  the graded gain when ``graded=True``).

Ranking metrics follow the Microsoft Recommenders ``python_evaluation`` conventions so numbers
compare with published MovieLens tables: precision@k = hits / k (short lists are not rewarded),
recall@k = hits / n_relevant, binary NDCG with a log2(rank + 1) discount and IDCG over
min(n_relevant, k) ideal hits, MAP@k = sum of precision@rank over hits / n_relevant (all of
them; ``map_denominator="min_k"`` divides by min(n_relevant, k) as newer releases do),
MRR@k = 1 / rank of the first hit, hit_rate@k = 1 if any hit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

MapDenominator = Literal["relevant", "min_k"]

SEGMENT_ORDER: tuple[str, ...] = ("new", "light", "medium", "heavy")
_EMBEDDING_CHUNK = 1024

__all__ = [
    "SEGMENT_ORDER",
    "catalog_coverage",
    "intra_list_diversity",
    "intra_list_diversity_per_user",
    "metrics_by_segment",
    "novelty",
    "novelty_per_user",
    "personalisation",
    "popularity_bias",
    "popularity_bias_per_user",
    "popularity_percentiles",
    "ranking_metrics",
    "remove_seen",
    "summarise",
    "user_segments",
    "users_with_truth",
]


# --------------------------------------------------------------------------- truth helpers


def _clean_truth(relevant: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """CSR copy with explicit zeros dropped and indices sorted, so nonzero means relevant."""
    truth = sp.csr_matrix(relevant, copy=True)
    truth.eliminate_zeros()
    truth.sum_duplicates()
    truth.sort_indices()
    return truth


def users_with_truth(relevant: sp.spmatrix | sp.sparray) -> np.ndarray:
    """Row indices of users with at least one relevant item (the users to evaluate)."""
    truth = _clean_truth(relevant)
    return np.flatnonzero(np.diff(truth.indptr) > 0)


def remove_seen(
    relevant: sp.spmatrix | sp.sparray, seen: sp.spmatrix | sp.sparray
) -> sp.csr_matrix:
    """Truth without the items each user already had in training (the "discovery" protocol)."""
    truth = _clean_truth(relevant)
    mask = sp.csr_matrix(seen, dtype=bool, copy=True)
    mask.eliminate_zeros()
    if mask.shape != truth.shape:
        raise ValueError(f"seen has shape {mask.shape}, relevant has {truth.shape}")
    kept = truth - truth.multiply(mask)
    kept = sp.csr_matrix(kept)
    kept.eliminate_zeros()
    return kept


# --------------------------------------------------------------------------- ranking metrics


def _pad_to(top: np.ndarray, k: int) -> np.ndarray:
    """Widen ``top`` with -1 so metrics at k larger than the list width still divide by k."""
    if top.shape[1] >= k:
        return top[:, :k]
    pad = np.full((top.shape[0], k - top.shape[1]), -1, dtype=top.dtype)
    return np.hstack([top, pad])


def _first_occurrence(top: np.ndarray) -> np.ndarray:
    """True where a slot holds a real item not already shown higher in the same list."""
    order = np.argsort(top, axis=1, kind="stable")
    ranked = np.take_along_axis(top, order, axis=1)
    repeat_sorted = np.zeros_like(ranked, dtype=bool)
    repeat_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return (top >= 0) & ~repeat


def _lookup_gains(top: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """Truth value at every (user, slot); 0 where the item is not relevant or a slot is padding."""
    n_users, n_items = truth.shape
    row_of_entry = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(truth.indptr))
    # (row, col) -> one sorted int64 key, so a single searchsorted looks up every slot at once
    keys = row_of_entry * n_items + truth.indices.astype(np.int64)
    valid = _first_occurrence(top) & (top < n_items)
    query = np.arange(n_users, dtype=np.int64)[:, None] * n_items + np.where(valid, top, 0)
    pos = np.searchsorted(keys, query)
    pos_clipped = np.minimum(pos, max(keys.size - 1, 0))
    found = valid & (pos < keys.size)
    if keys.size:
        found &= keys[pos_clipped] == query
    gains = np.zeros(top.shape, dtype=np.float64)
    gains[found] = truth.data[pos_clipped[found]]
    return gains


def _ideal_dcg(truth: sp.csr_matrix, k: int, graded: bool, discounts: np.ndarray) -> np.ndarray:
    """Best achievable DCG@k per user: the top min(n_relevant, k) gains in ideal order."""
    n_rel = np.diff(truth.indptr)
    if not graded:
        cum = np.concatenate([[0.0], np.cumsum(discounts[:k])])
        return cum[np.minimum(n_rel, k)]
    best = np.zeros((truth.shape[0], k), dtype=np.float64)
    for u in np.flatnonzero(n_rel):
        gains = np.sort(truth.data[truth.indptr[u] : truth.indptr[u + 1]])[::-1][:k]
        best[u, : gains.size] = gains
    return best @ discounts[:k]


def _metrics_at_k(
    hits: np.ndarray,
    gains: np.ndarray,
    ideal: np.ndarray,
    n_rel: np.ndarray,
    k: int,
    map_denominator: MapDenominator,
) -> dict[str, np.ndarray]:
    """All six per-user metrics for one cut-off k; ``hits``/``gains`` are already k wide."""
    ranks = np.arange(1, k + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    n_hits = hits.sum(axis=1)
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    map_div = n_rel if map_denominator == "relevant" else np.minimum(n_rel, k)
    first_hit = np.where(n_hits > 0, hits.argmax(axis=1) + 1, np.inf)
    return {
        f"precision@{k}": n_hits / k,
        f"recall@{k}": n_hits / n_rel,
        f"ndcg@{k}": (gains @ discounts) / ideal,
        f"map@{k}": (precision_at_rank * hits).sum(axis=1) / map_div,
        f"mrr@{k}": 1.0 / first_hit,
        f"hit_rate@{k}": (n_hits > 0).astype(np.float64),
    }


def ranking_metrics(
    top: np.ndarray,
    relevant: sp.spmatrix | sp.sparray,
    ks: Sequence[int] = (5, 10, 20),
    *,
    graded: bool = False,
    map_denominator: MapDenominator = "relevant",
) -> dict[str, np.ndarray]:
    """Per-user precision, recall, NDCG, MAP, MRR and hit rate at every k in ``ks``.

    Every row of ``relevant`` must hold at least one relevant item: select the users to
    evaluate with :func:`users_with_truth` first. A repeated item in a list counts once (at its
    best rank). ``graded=True`` uses the stored values as NDCG gains; every other metric is binary.
    """
    top = np.asarray(top)
    if top.ndim != 2 or not np.issubdtype(top.dtype, np.integer):
        raise ValueError(f"top must be a 2-d integer array, got {top.dtype} of shape {top.shape}")
    truth = _clean_truth(relevant)
    if truth.shape[0] != top.shape[0]:
        raise ValueError(f"top has {top.shape[0]} users, relevant has {truth.shape[0]}")
    n_rel = np.diff(truth.indptr)
    if (n_rel == 0).any():
        raise ValueError(
            f"{int((n_rel == 0).sum())} users have no relevant item; "
            "select rows with users_with_truth(relevant) first"
        )
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {tuple(ks)}")
    width = max(ks)
    wide = _pad_to(top.astype(np.int64, copy=False), width)
    gains_all = _lookup_gains(wide, truth)
    hits_all = (gains_all != 0).astype(np.float64)
    if not graded:
        gains_all = hits_all
    discounts = 1.0 / np.log2(np.arange(2, width + 2, dtype=np.float64))
    out: dict[str, np.ndarray] = {}
    for k in sorted(set(ks)):
        ideal = _ideal_dcg(truth, k, graded, discounts)
        out |= _metrics_at_k(hits_all[:, :k], gains_all[:, :k], ideal, n_rel, k, map_denominator)
    return out


def summarise(per_user: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-user metric; NaN entries (undefined for that user) are left out."""
    result: dict[str, float] = {}
    for name, values in per_user.items():
        arr = np.asarray(values, dtype=np.float64)
        finite = arr[~np.isnan(arr)]
        result[name] = float(finite.mean()) if finite.size else float("nan")
    return result


# --------------------------------------------------------------------------- beyond accuracy


def _valid_items(top: np.ndarray) -> np.ndarray:
    return np.asarray(top)[np.asarray(top) >= 0]


def catalog_coverage(top: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one user's list."""
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    items = _valid_items(top)
    return float(np.unique(items[items < n_items]).size / n_items)


def _pair_indices(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k, k=1)


def _mean_over_pairs(values: np.ndarray, pair_valid: np.ndarray) -> np.ndarray:
    """Row means over valid pairs; NaN for lists with fewer than two items."""
    counts = pair_valid.sum(axis=1)
    sums = np.where(pair_valid, values, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _category_distance(top: np.ndarray, item_categories: np.ndarray) -> np.ndarray:
    ia, ib = _pair_indices(top.shape[1])
    cats = np.asarray(item_categories)[np.where(top >= 0, top, 0)]
    differ = (cats[:, ia] != cats[:, ib]).astype(np.float64)
    valid = (top[:, ia] >= 0) & (top[:, ib] >= 0)
    return _mean_over_pairs(differ, valid)


def _embedding_distance(top: np.ndarray, item_embeddings: np.ndarray) -> np.ndarray:
    emb = np.asarray(item_embeddings, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    # a zero vector has no direction: leave it zero so its cosine similarity to anything is 0
    unit = emb / np.where(norms > 0, norms, 1.0)
    ia, ib = _pair_indices(top.shape[1])
    out = np.empty(top.shape[0], dtype=np.float64)
    # chunked so 6,000 users x 384-d embeddings never materialise at once
    for start in range(0, top.shape[0], _EMBEDDING_CHUNK):
        block = top[start : start + _EMBEDDING_CHUNK]
        vecs = unit[np.where(block >= 0, block, 0)]
        sims = np.einsum("ukd,ujd->ukj", vecs, vecs)[:, ia, ib]
        valid = (block[:, ia] >= 0) & (block[:, ib] >= 0)
        out[start : start + block.shape[0]] = _mean_over_pairs(1.0 - sims, valid)
    return out


def intra_list_diversity_per_user(
    top: np.ndarray,
    item_categories: np.ndarray | None = None,
    item_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Per-user diversity of a list; NaN for lists with fewer than two items.

    By category: the share of item pairs whose categories differ. By embedding: the mean
    pairwise cosine distance (1 - cosine similarity). Give exactly one of the two.
    """
    if (item_categories is None) == (item_embeddings is None):
        raise ValueError("give exactly one of item_categories or item_embeddings")
    top = np.asarray(top, dtype=np.int64)
    if top.shape[1] < 2:
        return np.full(top.shape[0], np.nan)
    if item_categories is not None:
        return _category_distance(top, item_categories)
    assert item_embeddings is not None
    return _embedding_distance(top, item_embeddings)


def intra_list_diversity(
    top: np.ndarray,
    item_categories: np.ndarray | None = None,
    item_embeddings: np.ndarray | None = None,
) -> float:
    """Mean intra-list diversity over users whose list holds at least two items."""
    per_user = intra_list_diversity_per_user(top, item_categories, item_embeddings)
    return summarise({"ild": per_user})["ild"]


def _item_probability(item_popularity: np.ndarray, n_users: int | None) -> np.ndarray:
    pop = np.asarray(item_popularity, dtype=np.float64)
    # an item never seen in training is as novel as one seen once, not infinitely novel
    counts = np.maximum(pop, 1.0)
    total = float(n_users) if n_users is not None else float(max(pop.sum(), 1.0))
    return np.minimum(counts / total, 1.0)


def novelty_per_user(
    top: np.ndarray, item_popularity: np.ndarray, n_users: int | None = None
) -> np.ndarray:
    """Mean self-information -log2 p(i) of each user's list; NaN for an empty list."""
    top = np.asarray(top, dtype=np.int64)
    info = -np.log2(_item_probability(item_popularity, n_users))
    values = np.where(top >= 0, info[np.where(top >= 0, top, 0)], 0.0)
    counts = (top >= 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, values.sum(axis=1) / np.maximum(counts, 1), np.nan)


def novelty(top: np.ndarray, item_popularity: np.ndarray, n_users: int | None = None) -> float:
    """Mean self-information -log2 p(i) over every recommended slot.

    ``item_popularity`` counts training interactions per item. p(i) is that count over the
    total count (the "choice" model of Castells et al., as Microsoft Recommenders' ``novelty``);
    pass ``n_users`` with counts of distinct users to get p(i) = share of users who had the item
    (the "discovery" model). Counts below 1 are raised to 1 so cold items stay finite.
    """
    top = np.asarray(top, dtype=np.int64)
    items = _valid_items(top)
    if items.size == 0:
        return float("nan")
    info = -np.log2(_item_probability(item_popularity, n_users))
    return float(info[items].mean())


def popularity_percentiles(item_popularity: np.ndarray) -> np.ndarray:
    """Each item's popularity percentile in 0..1: least popular 0, most popular 1, ties share."""
    pop = np.asarray(item_popularity, dtype=np.float64)
    if pop.size <= 1:
        return np.full(pop.size, 0.5)
    return (rankdata(pop, method="average") - 1.0) / (pop.size - 1.0)


def popularity_bias_per_user(top: np.ndarray, item_popularity: np.ndarray) -> np.ndarray:
    """Mean popularity percentile of each user's list; NaN for an empty list."""
    top = np.asarray(top, dtype=np.int64)
    pct = popularity_percentiles(item_popularity)
    values = np.where(top >= 0, pct[np.where(top >= 0, top, 0)], 0.0)
    counts = (top >= 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, values.sum(axis=1) / np.maximum(counts, 1), np.nan)


def popularity_bias(top: np.ndarray, item_popularity: np.ndarray) -> float:
    """Mean popularity percentile (0..1) of every recommended slot; 0.5 is popularity-neutral."""
    items = _valid_items(top)
    if items.size == 0:
        return float("nan")
    return float(popularity_percentiles(item_popularity)[items].mean())


def _list_matrix(top: np.ndarray, n_items: int) -> sp.csr_matrix:
    """Users x items 0/1 matrix of non-empty lists, rows scaled to unit length."""
    rows, cols = np.nonzero(top >= 0)
    items = top[rows, cols]
    lists = sp.csr_matrix(
        (np.ones(items.size), (rows, items)), shape=(top.shape[0], n_items), dtype=np.float64
    )
    lists.sum_duplicates()
    lists.data[:] = 1.0
    lists = lists[np.diff(lists.indptr) > 0]
    norms = np.sqrt(np.asarray(lists.sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / norms) @ lists)


def personalisation(
    top: np.ndarray, n_items: int, sample: int | None = None, seed: int = 0
) -> float:
    """1 - mean cosine similarity between two different users' lists (1 = all lists disjoint).

    The mean over all user pairs has a closed form (sum of all pairwise dot products is the
    squared norm of the column sums), so every user is used by default; ``sample`` restricts
    the computation to that many randomly chosen users, drawn with ``seed``.
    """
    top = np.asarray(top, dtype=np.int64)
    if sample is not None and top.shape[0] > sample:
        chosen = np.random.default_rng(seed).choice(top.shape[0], size=sample, replace=False)
        top = top[np.sort(chosen)]
    unit = _list_matrix(top, n_items)
    m = unit.shape[0]
    if m < 2:
        return float("nan")
    column_sums = np.asarray(unit.sum(axis=0)).ravel()
    pair_sum = float(column_sums @ column_sums) - m  # minus each list's similarity to itself
    return float(1.0 - pair_sum / (m * (m - 1)))


# --------------------------------------------------------------------------- segments


def user_segments(
    train_counts: np.ndarray, thresholds: tuple[int, int, int] = (0, 5, 20)
) -> np.ndarray:
    """Label users by training activity, with ``thresholds = (t0, t1, t2)``.

    - ``"new"``:    count <= t0        (default: no training interaction)
    - ``"light"``:  t0 < count <= t1   (default: 1-5)
    - ``"medium"``: t1 < count <= t2   (default: 6-20)
    - ``"heavy"``:  count > t2         (default: more than 20)
    """
    if len(thresholds) != 3 or not (thresholds[0] < thresholds[1] < thresholds[2]):
        raise ValueError(f"thresholds must be 3 increasing numbers, got {thresholds}")
    counts = np.asarray(train_counts)
    bins = np.digitize(counts, bins=np.asarray(thresholds), right=True)
    return np.asarray(SEGMENT_ORDER)[bins]


def _segment_sort_key(label: str) -> tuple[int, str]:
    known = SEGMENT_ORDER.index(label) if label in SEGMENT_ORDER else len(SEGMENT_ORDER)
    return (known, label)


def metrics_by_segment(
    per_user: Mapping[str, np.ndarray], labels: np.ndarray | Sequence[str]
) -> pd.DataFrame:
    """Mean of each per-user metric within each segment, plus an ``"all"`` row.

    Rows are segments (activity segments in new/light/medium/heavy order, then others
    alphabetically); column ``users`` counts the users in each segment.
    """
    labels_arr = np.asarray(labels).astype(str)
    frame = pd.DataFrame({name: np.asarray(v, dtype=np.float64) for name, v in per_user.items()})
    if len(frame) != labels_arr.size:
        raise ValueError(f"{labels_arr.size} labels for {len(frame)} users")
    frame.insert(0, "users", 1)
    how = {"users": "sum", **dict.fromkeys(per_user, "mean")}
    grouped = frame.groupby(labels_arr, sort=False).agg(how)
    grouped = grouped.loc[sorted(grouped.index, key=_segment_sort_key)]
    grouped.loc["all"] = frame.agg(how)
    grouped["users"] = grouped["users"].astype(np.int64)
    grouped.index.name = "segment"
    return grouped
