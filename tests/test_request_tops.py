"""`Recommender.request_top` gives each generator's top n for one request as the dense path
does: `top_k` over `model._score(row)` with the excluded items at -inf. The scores are
identical to the bit; so are the items, except among items tied with the last score kept,
where `top_k`'s partition may pick any of them. ALS folds the shopper in by its own least
squares (equal to rounding), and visits items by factor norm, stopping where no later item
can reach the top n."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from nextbuy.data.matrix import InteractionMatrix, from_frame
from nextbuy.datasets import SyntheticShop
from nextbuy.models import Recommender, create_model
from nextbuy.models.base import top_k
from nextbuy.models.content_model import ContentModel
from nextbuy.models.mf import NormOrder
from nextbuy.models.request_top import best


@pytest.fixture(scope="module")
def shop() -> tuple[InteractionMatrix, pd.DataFrame]:
    shop = SyntheticShop(n_users=400, n_items=300, n_categories=9, n_brands=15, seed=3, days=90)
    data = shop.shop_data(n_events=20_000)
    matrix = from_frame(data.interactions, half_life_days=30.0)
    return matrix, data.items


def fitted_models(data: InteractionMatrix, items: pd.DataFrame) -> dict[str, Recommender]:
    def content(weight: float) -> Recommender:
        return ContentModel(embeddings="none", popularity_weight=weight).fit(data, items)

    return {
        "itemknn": create_model("itemknn", neighbours=20).fit(data, items),
        "ease": create_model("ease", reg=100.0).fit(data, items),
        "ease pruned": create_model("ease", reg=100.0, max_items=60, prune_items=True).fit(
            data, items
        ),
        "content": content(0.1),
        "content, no popularity": content(0.0),
        "trending": create_model("trending", half_life_days=7.0).fit(data, items),
        "category": create_model("category_bestsellers").fit(data, items),
        "buy again": create_model("own_history").fit(data, items),
        "als": create_model("als", factors=8, iterations=3, use_gpu=False).fit(data, items),
    }


def rows_to_try(data: InteractionMatrix, rng: np.random.Generator) -> list[sp.csr_matrix]:
    """Trained users' rows, a one-item history, an empty one and a random heavy one."""
    rows = [sp.csr_matrix(data.matrix[u], dtype=np.float32) for u in rng.choice(data.n_users, 12)]
    one = sp.csr_matrix(([1.0], ([0], [7])), shape=(1, data.n_items), dtype=np.float32)
    empty = sp.csr_matrix((1, data.n_items), dtype=np.float32)
    cols = np.sort(rng.choice(data.n_items, 80, replace=False))
    heavy = sp.csr_matrix(
        (rng.random(80).astype(np.float32), (np.zeros(80, int), cols)), shape=(1, data.n_items)
    )
    return [*rows, one, empty, heavy]


def dense_top(model: Recommender, row: sp.csr_matrix, n: int, blocked: np.ndarray) -> tuple:
    scores = np.asarray(model._score(row), np.float32)
    scores[0, blocked] = -np.inf
    top = top_k(scores, n)
    return top.items, top.scores


@pytest.mark.parametrize(
    "name",
    [
        "itemknn",
        "ease",
        "ease pruned",
        "content",
        "content, no popularity",
        "trending",
        "category",
        "buy again",
        "als",
    ],
)
def test_each_generator_top_equals_the_dense_top_k(
    shop: tuple[InteractionMatrix, pd.DataFrame], name: str
) -> None:
    data, items = shop
    model = fitted_models(data, items)[name]
    rng = np.random.default_rng(0)
    compared = 0
    for row in rows_to_try(data, rng):
        for n in (5, 30):
            # exclusions: none, the row's own items, and those plus a random tenth
            own = np.zeros(data.n_items, bool)
            own[row.indices] = True
            extra = own | (rng.random(data.n_items) < 0.1)
            for blocked in (np.zeros(data.n_items, bool), own, extra):
                expected_items, expected_scores = dense_top(model, row, n, blocked)
                got = model.request_top(row, n, blocked)
                if name.startswith("als"):
                    # the fold-in is implicit's least squares, solved once more: rounding
                    np.testing.assert_allclose(got.scores, expected_scores, rtol=1e-4)
                    clear = expected_scores[0] > expected_scores[0, -1] + 1e-4
                    assert set(got.items[0, clear]) <= set(expected_items[0]), name
                else:
                    np.testing.assert_array_equal(got.scores, expected_scores, err_msg=name)
                    # among items tied with the last score kept, top_k's partition picks any
                    above = expected_scores[0] > expected_scores[0, -1]
                    assert got.items[0, above].tolist() == expected_items[0, above].tolist()
                compared += int((expected_items >= 0).sum())
    assert compared > 100  # the comparisons were about real lists, not empty ones


def test_best_keeps_every_tie_at_the_cut_and_breaks_it_by_index() -> None:
    items = np.array([9, 4, 7, 1, 3])
    scores = np.array([0.5, 0.9, 0.5, np.inf * -1, 0.5], np.float32)
    top = best(items, scores, 3)
    assert top.items.tolist() == [[4, 3, 7]]
    padded = best(items, scores, 6)
    assert padded.items.tolist() == [[4, 3, 7, 9, -1, -1]]
    assert np.isneginf(padded.scores[0, 4:]).all()


def test_als_skips_items_whose_norm_bound_cannot_reach_the_top(
    shop: tuple[InteractionMatrix, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, items = shop
    model = create_model("als", factors=8, iterations=3, use_gpu=False).fit(data, items)
    scored: list[int] = []
    original = NormOrder.scores

    def counting(self, user, start, stop, blocked):  # type: ignore[no-untyped-def]
        scored.append(stop - start)
        return original(self, user, start, stop, blocked)

    monkeypatch.setattr(NormOrder, "scores", counting)
    nobody = np.zeros(data.n_items, bool)
    per_row = []
    for user in range(0, data.n_users, 40):
        row = sp.csr_matrix(data.matrix[user], dtype=np.float32)
        scored.clear()
        got = model.request_top(row, 5, nobody)
        _, expected_scores = dense_top(model, row, 5, nobody)
        np.testing.assert_allclose(got.scores, expected_scores, rtol=1e-4)
        per_row.append(sum(scored))
    # some rows stop early, and the scores found are still the best ones
    assert min(per_row) < data.n_items
