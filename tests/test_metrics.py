"""Metrics against hand-computed cases, a brute-force reference and Hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from nextbuy.evaluation.metrics import (
    catalog_coverage,
    intra_list_diversity,
    intra_list_diversity_per_user,
    metrics_by_segment,
    novelty,
    novelty_per_user,
    personalisation,
    popularity_bias,
    popularity_bias_per_user,
    popularity_percentiles,
    ranking_metrics,
    remove_seen,
    summarise,
    user_segments,
    users_with_truth,
)

L2 = math.log2


def truth(rows: list[dict[int, float]], n_items: int) -> sp.csr_matrix:
    """CSR truth from one {item: gain} dict per user."""
    r = [u for u, row in enumerate(rows) for _ in row]
    c = [i for row in rows for i in row]
    v = [g for row in rows for g in row.values()]
    return sp.csr_matrix((v, (r, c)), shape=(len(rows), n_items), dtype=np.float64)


def one(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(values[0]) for name, values in metrics.items()}


# --------------------------------------------------------------------------- hand-computed


def test_brief_example_top_123_relevant_2_5() -> None:
    got = one(ranking_metrics(np.array([[1, 2, 3]]), truth([{2: 1, 5: 1}], 6), ks=(3,)))
    assert got["precision@3"] == pytest.approx(1 / 3)
    assert got["recall@3"] == pytest.approx(1 / 2)
    assert got["ndcg@3"] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    assert got["map@3"] == pytest.approx((1 / 2) / 2)
    assert got["mrr@3"] == pytest.approx(1 / 2)
    assert got["hit_rate@3"] == 1.0


def test_two_hits_at_several_cutoffs() -> None:
    # hits at ranks 2 and 4; three relevant items, one (9) never recommended
    got = one(ranking_metrics(np.array([[4, 1, 7, 2]]), truth([{1: 1, 2: 1, 9: 1}], 10), ks=(2, 4)))
    assert got["precision@2"] == pytest.approx(1 / 2)
    assert got["recall@2"] == pytest.approx(1 / 3)
    assert got["ndcg@2"] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    assert got["map@2"] == pytest.approx((1 / 2) / 3)
    assert got["precision@4"] == pytest.approx(2 / 4)
    assert got["recall@4"] == pytest.approx(2 / 3)
    ideal = 1 + 1 / L2(3) + 1 / L2(4)
    assert got["ndcg@4"] == pytest.approx((1 / L2(3) + 1 / L2(5)) / ideal)
    assert got["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert got["mrr@4"] == pytest.approx(1 / 2)


def test_map_min_k_denominator_divides_by_min_of_relevant_and_k() -> None:
    got = one(
        ranking_metrics(
            np.array([[4, 1, 7, 2]]),
            truth([{1: 1, 2: 1, 9: 1}], 10),
            ks=(2,),
            map_denominator="min_k",
        )
    )
    assert got["map@2"] == pytest.approx((1 / 2) / 2)


def test_no_hit_gives_zero_everywhere() -> None:
    got = one(ranking_metrics(np.array([[0, 1]]), truth([{3: 1}], 4), ks=(2,)))
    assert all(value == 0.0 for value in got.values())


def test_padding_counts_as_a_miss_and_precision_divides_by_k() -> None:
    got = one(ranking_metrics(np.array([[3, -1, -1]]), truth([{3: 1}], 5), ks=(3, 5)))
    assert got["precision@3"] == pytest.approx(1 / 3)
    assert got["precision@5"] == pytest.approx(1 / 5)  # k wider than the list
    assert got["recall@5"] == 1.0
    assert got["ndcg@3"] == pytest.approx(1.0)
    assert got["map@3"] == pytest.approx(1.0)
    assert got["mrr@3"] == 1.0


def test_repeated_item_counts_once() -> None:
    got = one(ranking_metrics(np.array([[3, 3, 4]]), truth([{3: 1, 4: 1}], 5), ks=(3,)))
    assert got["precision@3"] == pytest.approx(2 / 3)
    assert got["map@3"] == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_out_of_catalog_index_is_a_miss() -> None:
    got = one(ranking_metrics(np.array([[7, 0]]), truth([{0: 1}], 5), ks=(2,)))
    assert got["mrr@2"] == pytest.approx(1 / 2)


def test_graded_ndcg_uses_stored_gains() -> None:
    rel = truth([{0: 1.0, 1: 3.0}], 4)
    got = one(ranking_metrics(np.array([[0, 1]]), rel, ks=(2,), graded=True))
    assert got["ndcg@2"] == pytest.approx((1 + 3 / L2(3)) / (3 + 1 / L2(3)))
    binary = one(ranking_metrics(np.array([[0, 1]]), rel, ks=(2,)))
    assert binary["ndcg@2"] == pytest.approx(1.0)


def test_explicit_zero_is_not_relevant() -> None:
    rel = sp.csr_matrix((np.array([0.0, 1.0]), (np.array([0, 0]), np.array([1, 2]))), shape=(1, 3))
    got = one(ranking_metrics(np.array([[1, 2]]), rel, ks=(2,)))
    assert got["recall@2"] == 1.0
    assert got["mrr@2"] == pytest.approx(1 / 2)


def test_users_without_truth_must_be_selected_out() -> None:
    rel = truth([{1: 1}, {}, {0: 1}], 3)
    assert users_with_truth(rel).tolist() == [0, 2]
    top = np.array([[1, 0], [0, 1], [2, 0]])
    with pytest.raises(ValueError, match="users_with_truth"):
        ranking_metrics(top, rel, ks=(2,))
    keep = users_with_truth(rel)
    got = ranking_metrics(top[keep], rel[keep], ks=(2,))
    assert got["mrr@2"].tolist() == [1.0, 0.5]


def test_summarise_takes_means_and_skips_nan() -> None:
    assert summarise({"a": np.array([0.0, 1.0]), "b": np.array([np.nan, 0.5])}) == {
        "a": 0.5,
        "b": 0.5,
    }


def test_remove_seen_drops_training_items_from_truth() -> None:
    rel = truth([{0: 1, 1: 1}, {2: 1}], 3)
    seen = truth([{1: 1}, {2: 1}], 3)
    kept = remove_seen(rel, seen)
    assert kept.toarray().tolist() == [[1, 0, 0], [0, 0, 0]]
    assert users_with_truth(kept).tolist() == [0]


# --------------------------------------------------------------------------- reference & properties


def reference(top_row: list[int], rel: set[int], k: int) -> dict[str, float]:
    """Textbook definitions, one user at a time (Microsoft Recommenders conventions)."""
    seen: set[int] = set()
    hits = []
    for item in (top_row + [-1] * k)[:k]:
        hits.append(item in rel and item not in seen)
        seen.add(item)
    n_hits = sum(hits)
    dcg = sum(1 / L2(r + 2) for r, h in enumerate(hits) if h)
    idcg = sum(1 / L2(r + 2) for r in range(min(len(rel), k)))
    ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h) / len(rel)
    first = next((r + 1 for r, h in enumerate(hits) if h), None)
    return {
        f"precision@{k}": n_hits / k,
        f"recall@{k}": n_hits / len(rel),
        f"ndcg@{k}": dcg / idcg,
        f"map@{k}": ap,
        f"mrr@{k}": 0.0 if first is None else 1 / first,
        f"hit_rate@{k}": float(n_hits > 0),
    }


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, list[set[int]], int]:
    n_items = draw(st.integers(1, 15))
    n_users = draw(st.integers(1, 6))
    width = draw(st.integers(1, 8))
    items = st.integers(-1, n_items - 1)
    top = np.array(
        draw(
            st.lists(
                st.lists(items, min_size=width, max_size=width), min_size=n_users, max_size=n_users
            )
        )
    )
    rel = [
        draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items))
        for _ in range(n_users)
    ]
    return top, rel, n_items


@settings(max_examples=150, deadline=None)
@given(case=cases(), k=st.integers(1, 10))
def test_matches_reference_and_stays_in_unit_interval(
    case: tuple[np.ndarray, list[set[int]], int], k: int
) -> None:
    top, rel, n_items = case
    got = ranking_metrics(top, truth([dict.fromkeys(r, 1.0) for r in rel], n_items), ks=(k,))
    for u in range(top.shape[0]):
        expected = reference(top[u].tolist(), rel[u], k)
        for name, value in expected.items():
            assert got[name][u] == pytest.approx(value), name
    for values in got.values():
        assert np.all((values >= 0) & (values <= 1 + 1e-12))


@settings(max_examples=100, deadline=None)
@given(
    n_items=st.integers(2, 30),
    data=st.data(),
    k=st.integers(1, 12),
)
def test_perfect_ranking_gives_ndcg_one(n_items: int, data: st.DataObject, k: int) -> None:
    rel = sorted(data.draw(st.sets(st.integers(0, n_items - 1), min_size=1)))
    rest = [i for i in range(n_items) if i not in set(rel)]
    top = np.array([(rel + rest)[:k] + [-1] * max(0, k - n_items)])
    got = one(ranking_metrics(top, truth([dict.fromkeys(rel, 1.0)], n_items), ks=(k,)))
    assert got[f"ndcg@{k}"] == pytest.approx(1.0)
    assert got[f"mrr@{k}"] == 1.0
    assert got[f"recall@{k}"] == pytest.approx(min(len(rel), k) / len(rel))
    assert got[f"map@{k}"] == pytest.approx(min(len(rel), k) / len(rel))


# --------------------------------------------------------------------------- beyond accuracy


def test_catalog_coverage_counts_distinct_items() -> None:
    assert catalog_coverage(np.array([[0, 1], [1, 2], [-1, -1]]), n_items=5) == pytest.approx(3 / 5)


def test_intra_list_diversity_by_category() -> None:
    cats = np.array(["a", "a", "b"])
    # pairs (0,1) same, (0,2) and (1,2) differ
    assert intra_list_diversity(np.array([[0, 1, 2]]), item_categories=cats) == pytest.approx(2 / 3)
    per_user = intra_list_diversity_per_user(np.array([[0, 2, -1], [1, -1, -1]]), cats)
    assert per_user[0] == 1.0
    assert np.isnan(per_user[1])  # one item has no pair


def test_intra_list_diversity_by_embedding() -> None:
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    # cosine distances: (0,1) = 1, (0,2) = 0, (1,2) = 1
    got = intra_list_diversity(np.array([[0, 1, 2]]), item_embeddings=emb)
    assert got == pytest.approx(2 / 3)


def test_intra_list_diversity_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError):
        intra_list_diversity(np.array([[0, 1]]))


def test_novelty_is_mean_self_information() -> None:
    pop = np.array([1, 3, 4])  # 8 interactions in all
    assert novelty(np.array([[0, 1]]), pop) == pytest.approx((3 + L2(8 / 3)) / 2)
    # the share-of-users reading: 4 users
    assert novelty(np.array([[0, 1]]), pop, n_users=4) == pytest.approx((2 + L2(4 / 3)) / 2)
    assert novelty_per_user(np.array([[2, -1]]), pop)[0] == pytest.approx(1.0)


def test_popularity_bias_is_mean_percentile() -> None:
    pop = np.array([1, 3, 3, 10])
    assert popularity_percentiles(pop).tolist() == [0.0, 0.5, 0.5, 1.0]
    assert popularity_bias(np.array([[3, 0]]), pop) == pytest.approx(0.5)
    assert popularity_bias(np.array([[3, -1], [1, 2]]), pop) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert popularity_bias_per_user(np.array([[3, -1], [1, 2]]), pop).tolist() == [1.0, 0.5]


def test_personalisation_hand_cases() -> None:
    assert personalisation(np.array([[0, 1], [0, 1]]), 4) == pytest.approx(0.0)
    assert personalisation(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(1.0)
    assert personalisation(np.array([[0, 1], [1, 2]]), 4) == pytest.approx(0.5)


def test_personalisation_matches_pairwise_cosine() -> None:
    rng = np.random.default_rng(0)
    top = np.array([rng.choice(12, size=4, replace=False) for _ in range(7)])
    top[2, 3] = -1
    vectors = np.zeros((7, 12))
    for u, row in enumerate(top):
        vectors[u, row[row >= 0]] = 1
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    expected = 1 - sims[np.triu_indices(7, k=1)].mean()
    assert personalisation(top, 12) == pytest.approx(expected)
    sampled = personalisation(top, 12, sample=4, seed=3)
    assert sampled == personalisation(top, 12, sample=4, seed=3)
    assert 0.0 <= sampled <= 1.0


# --------------------------------------------------------------------------- segments


def test_user_segments_bins() -> None:
    labels = user_segments(np.array([0, 1, 5, 6, 20, 21]))
    assert labels.tolist() == ["new", "light", "light", "medium", "medium", "heavy"]
    with pytest.raises(ValueError):
        user_segments(np.array([1]), thresholds=(5, 5, 20))


def test_metrics_by_segment_means_counts_and_order() -> None:
    per_user = {"ndcg@10": np.array([1.0, 0.0, 0.5, 0.25]), "ild": np.array([np.nan, 1, 0, 0])}
    table = metrics_by_segment(per_user, np.array(["heavy", "new", "heavy", "shoes"]))
    assert table.index.tolist() == ["new", "heavy", "shoes", "all"]
    assert table["users"].tolist() == [1, 2, 1, 4]
    assert table.loc["heavy", "ndcg@10"] == pytest.approx(0.75)
    assert table.loc["heavy", "ild"] == pytest.approx(0.0)
    assert table.loc["all", "ndcg@10"] == pytest.approx(1.75 / 4)
