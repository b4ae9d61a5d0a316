"""Honest numbers for the hybrid pipeline: same split, same truth, tuned single-model peers.

- `tune_singles`: each single model's hyper-parameters and matrix half-life chosen on a
  validation period carved from the end of the training part (the test part is never read).
- `evaluate_protocol`: the tuned single models, the baselines and the hybrid on one
  protocol ("discovery": a user's own items are neither listed nor counted; "repeat":
  nothing excluded, the user's-own-history baseline added), with the runner's truth.
- `cold_users`: users with at most two training events, and brand-new users whose first
  basket is revealed as their session so far.
- `cold_items`: items first seen in the test period, ranked by content, by the content →
  ALS factor mapping, and by models that have no signal for them.
- `objective_tradeoff`: NDCG given up and revenue gained per relevance/value blend weight.
- `onboarding`: onboarding answers against a planted taste (synthetic shop).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nextbuy.data.matrix import from_frame
from nextbuy.datasets import SyntheticShop
from nextbuy.evaluation import metrics
from nextbuy.evaluation.setup import EvaluationSetup, fill_with_popular, prepare
from nextbuy.evaluation.splits import Split, temporal_split
from nextbuy.hybrid.config import HybridConfig, default_generators
from nextbuy.hybrid.objective import ValueObjective, expected_value
from nextbuy.hybrid.pipeline import HybridRecommender
from nextbuy.hybrid.stage import Scored
from nextbuy.models import create_model
from nextbuy.models.base import Recommender
from nextbuy.models.content_model import ContentModel

K = 10
HYBRID_RELEVANCE = "hybrid (no exposure penalty)"
COVERAGE_MARGIN = 1.1
EXPOSURE_GRID: tuple[float, ...] = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
METRICS: tuple[str, ...] = ("ndcg", "recall", "precision", "map", "hit_rate")

# (params, half-life) candidates per single model; half-life None = no decay
Candidate = tuple[dict[str, Any], float | None]
DEFAULT_GRID: dict[str, list[Candidate]] = {
    "popularity": [({}, None)],
    "trending": [({"half_life_days": h}, None) for h in (1.0, 3.0, 7.0)],
    "ease": [({"reg": r}, h) for r in (500.0, 1500.0, 4000.0) for h in (None, 30.0, 90.0)],
    "als": [
        ({"factors": f, "regularization": r, "alpha": a}, h)
        for f, r, a in ((64, 1.0, 0.1), (64, 1.0, 0.3), (64, 1.0, 1.0), (128, 1.0, 0.3))
        for h in (None, 60.0)
    ],
    "itemknn": [
        ({"neighbours": n, "weighting": w}, h)
        for n in (10, 20, 50, 200)
        for w in ("bm25", "tfidf")
        for h in (None, 60.0)
    ],
    "content": [
        ({"embeddings": "none", "popularity_weight": p}, h)
        for p in (0.1, 0.3, 1.0)
        for h in (None, 60.0)
    ],
}
REPEAT_GRID: dict[str, list[Candidate]] = {"own_history": [({}, None), ({}, 30.0), ({}, 90.0)]}


@dataclass
class Tuned:
    """The chosen setting of one single model for one protocol."""

    model: str
    params: dict[str, Any]
    half_life_days: float | None
    validation_ndcg: float
    tried: int
    validation_coverage: float = float("nan")

    def build(self) -> Recommender:
        params = dict(self.params)
        if self.model == "ease":
            params.setdefault("prune_items", True)
        return create_model(self.model, **params)


# --------------------------------------------------------------------------- helpers


def truth_columns(setup: EvaluationSetup, id_lists: Sequence[Sequence[str]], k: int) -> np.ndarray:
    """Item-id lists as (n, k) truth-column indices; ids outside the truth space never hit."""
    index = {str(t): i for i, t in enumerate(setup.truth_item_ids)}
    outside = len(index) + 1  # a column no truth row holds, but not padding either
    out = np.full((len(id_lists), k), -1, np.int64)
    for r, ids in enumerate(id_lists):
        row = [index.get(str(t), outside) for t in list(ids)[:k]]
        out[r, : len(row)] = row
    return out


def score_lists(top: np.ndarray, setup: EvaluationSetup, rows: np.ndarray | None = None) -> dict:
    """NDCG, recall, precision, MAP, hit rate @K and catalog coverage of these lists."""
    if rows is not None:
        top, truth = top[rows], setup.truth[rows]
    else:
        truth = setup.truth
    means = metrics.summarise(metrics.ranking_metrics(top, truth, (K,)))
    out = {m: means[f"{m}@{K}"] for m in METRICS}
    out["coverage"] = metrics.catalog_coverage(top, setup.data.n_items)
    out["users"] = int(truth.shape[0])
    return out


def _setups(
    split: Split, protocol: str, half_lives: Iterable[float | None], weights: Mapping[str, float]
) -> dict[float | None, EvaluationSetup]:
    setups = {
        h: prepare(split.train, split.test, protocol, weights=weights, half_life_days=h)  # type: ignore[arg-type]
        for h in half_lives
    }
    first = next(iter(setups.values()))
    for setup in setups.values():
        assert np.array_equal(setup.user_ids, first.user_ids)  # same users whatever the decay
    return setups


def model_lists(
    model: Recommender, setup: EvaluationSetup, items: pd.DataFrame | None
) -> np.ndarray:
    with threadpool_limits(2):
        model.fit(setup.data, items)
    return _lists(model, setup)


def _lists(model: Recommender, setup: EvaluationSetup) -> np.ndarray:
    """A fitted model's top-K of every evaluated user, topped up with popular items."""
    with threadpool_limits(2):
        top = model.recommend(setup.histories, K, setup.exclude).items
    return fill_with_popular(top, setup)


# --------------------------------------------------------------------------- tuning


def validation_split(split: Split) -> Split:
    """The training part cut again so validation is about as long (in rows) as the test."""
    share = len(split.test) / max(len(split.train), 1)
    return temporal_split(split.train, test_fraction=min(max(share, 0.05), 0.5))


def tune_singles(
    split: Split,
    items: pd.DataFrame | None,
    protocols: Sequence[str] = ("discovery", "repeat"),
    grid: Mapping[str, list[Candidate]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Tuned]]:
    """protocol → model → best setting on the validation period of `split.train`."""
    grid = dict(DEFAULT_GRID if grid is None else grid)
    inner = validation_split(split)
    weights = dict(weights or {})
    half_lives = {h for options in [*grid.values(), *REPEAT_GRID.values()] for _, h in options}
    setups = {p: _setups(inner, p, sorted(half_lives, key=_hl_key), weights) for p in protocols}
    best: dict[str, dict[str, Tuned]] = {p: {} for p in protocols}
    full_grid = dict(grid)
    if "repeat" in protocols:
        full_grid.update(REPEAT_GRID)
    for name, options in full_grid.items():
        wanted = [p for p in protocols if name != "own_history" or p == "repeat"]
        for params, half_life in options:
            # the training matrix is the same under every protocol: fit once, list per protocol
            model = create_model(name, **_fit_params(name, params))
            with threadpool_limits(2):
                model.fit(setups[wanted[0]][half_life].data, items)
            for protocol in wanted:
                setup = setups[protocol][half_life]
                scores = score_lists(_lists(model, setup), setup)
                found = Tuned(name, dict(params), half_life, scores["ndcg"], 1, scores["coverage"])
                _keep_best(best[protocol], found)
    return best


def _keep_best(best: dict[str, Tuned], candidate: Tuned) -> None:
    current = best.get(candidate.model)
    if current is None:
        best[candidate.model] = candidate
    elif candidate.validation_ndcg > current.validation_ndcg:
        candidate.tried = current.tried + 1
        best[candidate.model] = candidate
    else:
        current.tried += 1


def _hl_key(h: float | None) -> float:
    return -1.0 if h is None else h


def _fit_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(params)
    if name == "ease":
        out.setdefault("prune_items", True)
    return out


# --------------------------------------------------------------------------- protocols


def hybrid_config(tuned: Mapping[str, Tuned], protocol: str, **overrides: Any) -> HybridConfig:
    """The default pipeline with each generator's model set as its single model was tuned."""
    specs = default_generators(protocol)  # type: ignore[arg-type]
    for spec in specs:
        source = "itemknn" if spec.name == "recent" else spec.name
        choice = tuned.get(source)
        if choice is None or source not in ("als", "ease", "itemknn", "content", "trending"):
            continue
        spec.params = {**spec.params, **choice.params}
        if source == "itemknn":
            # as a candidate source, recall matters more than the single model's precision
            spec.params["neighbours"] = max(int(choice.params.get("neighbours", 100)), 100)
        if source != "trending":
            spec.half_life_days = choice.half_life_days
    # TF-IDF content unless told otherwise: encoding the catalogue costs ~40 s per fit here,
    # and `content_variants` measures what the embeddings add
    overrides.setdefault("embeddings", "none")
    return HybridConfig(protocol=protocol, generators=specs, **overrides)  # type: ignore[arg-type]


def tune_exposure(
    split: Split,
    items: pd.DataFrame,
    protocol: str,
    tuned: Mapping[str, Tuned],
    config: HybridConfig,
    weights: Mapping[str, float],
    grid: Sequence[float] = EXPOSURE_GRID,
) -> tuple[float, pd.DataFrame]:
    """The exposure penalty, chosen on a validation period: the smallest that lifts coverage
    to the reference's + 10 % while NDCG stays above the reference's; if none does, the
    largest that keeps NDCG above it.

    The reference is the best single model by validation NDCG or, on the repeat-aware
    protocol, the own-history baseline where that is better. The hybrid is fitted on the
    training part of the validation split; the test part of `split` is never read.
    """
    inner = validation_split(split)
    setup = prepare(inner.train, inner.test, protocol, weights=weights)  # type: ignore[arg-type]
    hybrid = HybridRecommender(config).fit(inner.train, items, inner.test_cut)
    scored = hybrid.score(list(setup.user_ids))
    rows = []
    for gamma in grid:
        top = truth_columns(setup, hybrid.top_ids(scored, scored.top(K, exposure_penalty=gamma)), K)
        rows.append(
            {"exposure_penalty": gamma, **score_lists(fill_with_popular(top, setup), setup)}
        )
    table = pd.DataFrame(rows)
    peers = [t for name, t in tuned.items() if name != "popularity"]
    reference = max(peers, key=lambda t: t.validation_ndcg)
    # coverage moves between periods (EASE's grew 17 % from validation to test on Online
    # Retail while the hybrid's held), so the coverage target carries a margin
    table["reference_ndcg"] = reference.validation_ndcg
    table["reference_coverage"] = COVERAGE_MARGIN * reference.validation_coverage
    accurate = table.loc[table["ndcg"] > table["reference_ndcg"]]
    reaching = accurate.loc[accurate["coverage"] >= accurate["reference_coverage"]]
    if len(reaching):
        return float(reaching["exposure_penalty"].min()), table
    if len(accurate):
        return float(accurate["exposure_penalty"].max()), table
    return 0.0, table


@dataclass
class ProtocolResult:
    """One protocol's table and what the cold-start and objective tables build on."""

    protocol: str
    table: pd.DataFrame
    setup: EvaluationSetup
    lists: dict[str, np.ndarray]
    scored: Scored | None = None
    hybrid: HybridRecommender | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def evaluate_protocol(
    split: Split,
    items: pd.DataFrame,
    protocol: str,
    tuned: Mapping[str, Tuned],
    config: HybridConfig | None = None,
    weights: Mapping[str, float] | None = None,
) -> ProtocolResult:
    """Tuned single models, baselines and the hybrid, scored against the same truth."""
    weights = dict(weights or {})
    half_lives = {t.half_life_days for t in tuned.values()} | {None}
    setups = _setups(split, protocol, sorted(half_lives, key=_hl_key), weights)
    base = setups[None]
    lists: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, choice in tuned.items():
        start = time.perf_counter()
        lists[name] = model_lists(choice.build(), setups[choice.half_life_days], items)
        seconds[name] = time.perf_counter() - start
    lists["random"] = model_lists(create_model("random"), base, items)
    start = time.perf_counter()
    hybrid = HybridRecommender(config or HybridConfig(protocol=protocol))  # type: ignore[arg-type]
    hybrid.fit(split.train, items, split.test_cut)
    scored = hybrid.score(list(base.user_ids))
    seconds["hybrid"] = time.perf_counter() - start
    penalty = hybrid.config.exposure_penalty
    variants = {"hybrid": penalty} if penalty == 0 else {"hybrid": penalty, HYBRID_RELEVANCE: 0.0}
    for name, gamma in variants.items():
        picks = scored.top(K, exposure_penalty=gamma)
        lists[name] = fill_with_popular(truth_columns(base, hybrid.top_ids(scored, picks), K), base)
    rows = [{"model": name, **score_lists(top, base)} for name, top in lists.items()]
    table = pd.DataFrame(rows).sort_values("ndcg", ascending=False).reset_index(drop=True)
    return ProtocolResult(protocol, table, base, lists, scored, hybrid, seconds)


def exposure_frontier(
    result: ProtocolResult, grid: Sequence[float] = EXPOSURE_GRID
) -> pd.DataFrame:
    """NDCG and coverage of the hybrid's test lists at every exposure penalty (for the record:
    the penalty used was chosen on validation, not from this table)."""
    assert result.scored is not None and result.hybrid is not None
    rows = []
    for gamma in grid:
        picks = result.scored.top(K, exposure_penalty=gamma)
        top = truth_columns(result.setup, result.hybrid.top_ids(result.scored, picks), K)
        scores = score_lists(fill_with_popular(top, result.setup), result.setup)
        rows.append({"exposure_penalty": gamma, **scores})
    return pd.DataFrame(rows)


def top_of(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :K]


# --------------------------------------------------------------------------- objective


def objective_tradeoff(
    result: ProtocolResult, weights: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5)
) -> pd.DataFrame:
    """Per blend weight w: NDCG@10, expected and realised revenue@10 and their change vs w=0.

    Expected revenue = Σ over the list of P(purchase) × value; realised revenue = Σ of the
    value of the listed items the user did buy. Value = price × margin (price where the catalog
    has no margins). The lists carry the pipeline's exposure penalty, as served.
    """
    assert result.scored is not None and result.hybrid is not None
    scored, setup = result.scored, result.setup
    price = scored.features["price"].to_numpy()
    value = ValueObjective(0.0).value(price)
    rows = []
    penalty = result.hybrid.config.exposure_penalty
    for w in weights:
        objective = ValueObjective(w)
        picks = scored.top(K, objective, price, exposure_penalty=penalty)
        top = truth_columns(setup, result.hybrid.top_ids(scored, picks), K)
        per_user = metrics.ranking_metrics(top, setup.truth, (K,))
        hits = _hit_mask(top, setup.truth)
        safe = np.where(picks >= 0, picks, 0)
        realised = np.where((picks >= 0) & hits, value[safe], 0.0).sum(axis=1)
        rows.append(
            {
                "w": w,
                "ndcg": float(np.mean(per_user[f"ndcg@{K}"])),
                "expected_revenue": float(expected_value(scored.probability, value, picks).mean()),
                "realised_revenue": float(realised.mean()),
                "mean_price": float(np.nanmean(np.where(picks >= 0, value[safe], np.nan))),
            }
        )
    table = pd.DataFrame(rows)
    for column in ("ndcg", "expected_revenue", "realised_revenue"):
        table[f"{column}_change"] = table[column] / table[column].iloc[0] - 1.0
    return table


def _hit_mask(top: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    out = np.zeros(top.shape, bool)
    for r in range(top.shape[0]):
        mine = truth.indices[truth.indptr[r] : truth.indptr[r + 1]]
        out[r] = np.isin(top[r], mine)
    return out


# --------------------------------------------------------------------------- onboarding


def onboarding(n_users: int = 2000, n_items: int = 600, seed: int = 0) -> pd.DataFrame:
    """New customers with onboarding answers only, on a synthetic shop with a planted taste.

    NDCG@10 against each customer's 10 truly most likely purchases (the planted truth).
    """
    shop = SyntheticShop(n_users=n_users, n_items=n_items, seed=seed)
    data_frames = shop.shop_data(n_events=60_000)
    users = shop.users(onboarding_share=1.0)
    matrix = from_frame(data_frames.interactions, item_ids=list(shop.item_ids))
    model = ContentModel(embeddings="none").fit(matrix, shop.items())
    popularity = create_model("popularity").fit(matrix)
    chosen = users.sample(min(500, len(users)), random_state=seed)
    truth_top = np.argsort(-shop.true_affinity(chosen["user_id"].tolist()), axis=1)[:, :K]
    truth = sp.csr_matrix(
        (np.ones(truth_top.size), (np.repeat(np.arange(len(chosen)), K), truth_top.ravel())),
        shape=(len(chosen), len(shop.item_ids)),
    )
    pop_top = popularity.recommend(sp.csr_matrix((len(chosen), len(shop.item_ids))), K).items
    onboard = np.vstack(
        [
            model.onboarding_scores(a["categories"], a["brands"], a["price_min"], a["price_max"])
            for a in chosen["onboarding"]
        ]
    )
    rows = []
    for name, top in (("popularity", pop_top), ("onboarding (content + popular)", top_of(onboard))):
        means = metrics.summarise(metrics.ranking_metrics(top, truth, (K,)))
        rows.append(
            {"model": name, **{m: means[f"{m}@{K}"] for m in METRICS}, "users": len(chosen)}
        )
    return pd.DataFrame(rows)
