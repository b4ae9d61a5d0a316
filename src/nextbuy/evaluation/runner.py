"""Fit models on a split's training part and score their top-k lists on its test part.

Three protocols say what counts as a hit:

- ``"discovery"`` (default): items a user had in training are neither recommended nor counted
  as relevant, so "buy it again" cannot inflate the numbers of a shop with repeat purchases.
- ``"repeat"``: nothing is excluded; a repurchase is a hit. A user's-own-history baseline
  (``own_history``) is added, the bar every model must clear there.
- ``"standard"``: training items are excluded from the lists, every test interaction is
  relevant (the MovieLens protocol of Microsoft Recommenders and most papers).

Random and popularity baselines are always added, so every table says what "better" means.
Users first seen in the test period are evaluated with the list a model gives an empty
history; lists shorter than k (a personal model has nothing to say about a new user) are
topped up with the most popular items, as a storefront would. Items first seen in the test
period stay in the truth: no model can recommend them, and the split summary says how much
of the truth they are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nextbuy.errors import ConfigError, DataError, NextbuyError
from nextbuy.evaluation import metrics
from nextbuy.evaluation.setup import (
    PROTOCOLS,
    EvaluationSetup,
    Protocol,
    fill_with_popular,
    fit_on_events,
    prepare,
    recommend_lists,
)
from nextbuy.evaluation.splits import Split
from nextbuy.models.base import Recommender
from nextbuy.models.blend import OwnHistory
from nextbuy.models.mf import ALSModel
from nextbuy.models.popularity import PopularityModel
from nextbuy.models.random_model import RandomModel

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20)
RANKING_METRICS: tuple[str, ...] = ("ndcg", "recall", "precision", "map", "mrr", "hit_rate")
MAX_CATEGORY_SEGMENTS = 12  # the rest are pooled as "other" so the table stays readable


__all__ = [
    "DEFAULT_KS",
    "PROTOCOLS",
    "EvaluationResult",
    "EvaluationSetup",
    "evaluate_models",
    "fill_with_popular",
    "prepare",
    "recommend_lists",
]


# --------------------------------------------------------------------------- result


@dataclass
class EvaluationResult:
    """Every number of one evaluation: per model, per k and per segment."""

    table: pd.DataFrame  # one row per model
    by_k: pd.DataFrame  # model, k, metric, value
    by_segment: pd.DataFrame  # model, dimension, segment, users, metrics at every k
    split_summary: dict[str, Any]
    protocol: str
    ks: tuple[int, ...] = DEFAULT_KS
    beyond_k: int = 10

    @property
    def baselines(self) -> list[str]:
        return self.table.loc[self.table["baseline"], "model"].tolist()

    def to_json(self) -> dict[str, Any]:
        """Every number, as plain JSON values (NaN becomes null)."""
        return _jsonable(
            {
                "protocol": self.protocol,
                "ks": list(self.ks),
                "beyond_k": self.beyond_k,
                "split_summary": self.split_summary,
                "table": self.table.to_dict(orient="records"),
                "by_k": self.by_k.to_dict(orient="records"),
                "by_segment": self.by_segment.to_dict(orient="records"),
            }
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or value is None:
        return None
    return value


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Outcome:
    """One model's lists and timings, or why it could not be evaluated."""

    top: np.ndarray | None
    fit_seconds: float
    recommend_seconds: float
    error: str | None = None


def evaluate_models(
    split: Split,
    models: Mapping[str, Recommender],
    *,
    protocol: Protocol = "discovery",
    ks: Sequence[int] = DEFAULT_KS,
    items: pd.DataFrame | None = None,
    weights: Mapping[str, float] | None = None,
    half_life_days: float | None = None,
    segment_by_category: bool = True,
    baselines: bool = True,
    relevant_events: Sequence[str] | None = None,
    fill: bool = True,
) -> EvaluationResult:
    """Fit each (unfitted) model on `split.train` and evaluate it on `split.test`.

    The models are fitted in place. A model that fails to fit (say EASE on too large a
    catalogue) gets a row with its error and no numbers rather than stopping the others.
    """
    return evaluate_protocols(
        split,
        models,
        protocols=(protocol,),
        ks=ks,
        items=items,
        weights=weights,
        half_life_days=half_life_days,
        segment_by_category=segment_by_category,
        baselines=baselines,
        relevant_events=relevant_events,
        fill=fill,
    )[0]


def evaluate_protocols(
    split: Split,
    models: Mapping[str, Recommender],
    *,
    protocols: Sequence[str] = ("discovery", "repeat"),
    ks: Sequence[int] = DEFAULT_KS,
    items: pd.DataFrame | None = None,
    weights: Mapping[str, float] | None = None,
    half_life_days: float | None = None,
    segment_by_category: bool = True,
    baselines: bool = True,
    relevant_events: Sequence[str] | None = None,
    fill: bool = True,
) -> list[EvaluationResult]:
    """`evaluate_models` under several protocols, each model fitted once.

    A model that learns from events (the hybrid) is fitted for the first protocol; its lists
    are scored under the others with what they exclude left out.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ConfigError(f"ks must be positive cut-offs, got {ks}")
    if not protocols:
        raise ConfigError("no protocol to evaluate under")
    setups: list[EvaluationSetup] = []
    for protocol in protocols:
        setups.append(
            prepare(
                split.train,
                split.test,
                protocol,  # type: ignore[arg-type]
                weights=weights,
                half_life_days=half_life_days,
                relevant_events=relevant_events,
                data=setups[0].data if setups else None,
            )
        )
        if setups[-1].n_users == 0:
            raise DataError("no test user has a relevant interaction left to evaluate on")
    roster = _with_baselines(models, "repeat" if "repeat" in protocols else "", baselines)
    fits = {name: _fit(model, setups[0], items) for name, model in roster.items()}
    return [
        _result(split, setup, roster, fits, ks, items, segment_by_category, fill)
        for setup in setups
    ]


def _result(
    split: Split,
    setup: EvaluationSetup,
    roster: Mapping[str, Recommender],
    fits: Mapping[str, _Outcome],
    ks: tuple[int, ...],
    items: pd.DataFrame | None,
    segment_by_category: bool,
    fill: bool,
) -> EvaluationResult:
    protocol = setup.protocol
    wanted = {n: m for n, m in roster.items() if protocol == "repeat" or n != "own_history"}
    outcomes = {n: _lists(m, fits[n], setup, max(ks), fill) for n, m in wanted.items()}
    context = _BeyondContext.build(setup, wanted, items, ks)
    rows, long_rows, segments = [], [], []
    for name, outcome in outcomes.items():
        row, per_user = _model_row(name, wanted[name], outcome, setup, context)
        rows.append(row)
        long_rows.extend(_by_k_rows(name, outcome, per_user, setup, context))
        if per_user is not None:
            segments.append(_segments(name, outcome, per_user, setup, context, segment_by_category))
    beyond_k = context.beyond_k
    summary = {**_split_summary(split), **setup.summary, "protocol": protocol, "ks": list(ks)}
    summary.update(
        beyond_k=beyond_k, fill_with_popular=fill, half_life_days=setup.data.half_life_days
    )
    return EvaluationResult(
        table=pd.DataFrame(rows),
        by_k=pd.DataFrame(long_rows, columns=["model", "k", "metric", "value"]),
        by_segment=pd.concat(segments, ignore_index=True) if segments else pd.DataFrame(),
        split_summary=summary,
        protocol=protocol,
        ks=ks,
        beyond_k=beyond_k,
    )


def _with_baselines(
    models: Mapping[str, Recommender], protocol: str, baselines: bool
) -> dict[str, Recommender]:
    roster = dict(models)
    if not baselines:
        if not roster:
            raise ConfigError("no model to evaluate")
        return roster
    wanted: dict[str, Recommender] = {"random": RandomModel(), "popularity": PopularityModel()}
    if protocol == "repeat":
        wanted["own_history"] = OwnHistory()
    for name, model in wanted.items():
        if not any(m.name == model.name for m in roster.values()):
            roster.setdefault(name, model)
    return roster


def _fit(model: Recommender, setup: EvaluationSetup, items: pd.DataFrame | None) -> _Outcome:
    start = time.perf_counter()
    try:
        if model.needs_events:
            fit_on_events(model, setup, items)
        else:
            model.fit(setup.data, items)
    except NextbuyError as exc:
        return _Outcome(None, time.perf_counter() - start, math.nan, f"{exc}")
    return _Outcome(None, time.perf_counter() - start, math.nan)


def _lists(
    model: Recommender, fit: _Outcome, setup: EvaluationSetup, k: int, fill: bool
) -> _Outcome:
    if fit.error is not None:
        return fit
    top, recommend_seconds = recommend_lists(model, setup, k, fill=fill)
    return _Outcome(top, fit.fit_seconds, recommend_seconds)


@dataclass
class _BeyondContext:
    """Item facts shared by every model's beyond-accuracy numbers."""

    ks: tuple[int, ...]
    beyond_k: int
    categories: np.ndarray | None  # full category per truth column, "" where unknown
    segment_of_column: np.ndarray | None  # category segment per truth column
    embeddings: np.ndarray | None  # ALS item factors, when an ALS model was evaluated

    @classmethod
    def build(
        cls,
        setup: EvaluationSetup,
        roster: Mapping[str, Recommender],
        items: pd.DataFrame | None,
        ks: tuple[int, ...],
    ) -> _BeyondContext:
        beyond_k = 10 if 10 in ks else max(ks)
        categories = _categories(items, setup.truth_item_ids)
        segment_of_column = None if categories is None else _category_segments(categories, setup)
        return cls(ks, beyond_k, categories, segment_of_column, _als_factors(roster))


def _categories(items: pd.DataFrame | None, item_ids: np.ndarray) -> np.ndarray | None:
    """The category of each item, "" where unknown; None when fewer than two categories."""
    if items is None or not {"item_id", "category"} <= set(items.columns):
        return None
    table = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates(
        "item_id", keep="last"
    )
    per_item = table.set_index("item_id")["category"].reindex([str(i) for i in item_ids])
    values = per_item.where(per_item.notna(), "").astype(str).to_numpy()
    known = values[values != ""]
    return values if np.unique(known).size >= 2 else None


def _category_segments(categories: np.ndarray, setup: EvaluationSetup) -> np.ndarray:
    """Top-level category per truth column; the less frequent ones pooled as "other"."""
    top_level = np.array([c.split(">")[0].strip() or "(none)" for c in categories], dtype=object)
    weight = np.bincount(setup.truth.indices, minlength=len(categories))
    totals = pd.Series(weight).groupby(top_level).sum().sort_values(ascending=False)
    kept = set(totals.index[:MAX_CATEGORY_SEGMENTS])
    return np.array([c if c in kept else "other" for c in top_level], dtype=object)


def _als_factors(roster: Mapping[str, Recommender]) -> np.ndarray | None:
    """The item factors of the first ALS model evaluated: the space intra-list diversity
    is measured in."""
    for model in roster.values():
        found = model.item_vectors() if model.name == ALSModel.name else None
        if found is not None and found.size:
            return found
    return None


def _model_row(
    name: str,
    model: Recommender,
    outcome: _Outcome,
    setup: EvaluationSetup,
    context: _BeyondContext,
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    row: dict[str, Any] = {
        "model": name,
        "baseline": model.baseline,
        "n_users_evaluated": setup.n_users,
    }
    if outcome.top is None:
        row.update(fit_seconds=outcome.fit_seconds, recommend_seconds=math.nan)
        row["error"] = outcome.error
        return row, None
    per_user = metrics.ranking_metrics(outcome.top, setup.truth, context.ks)
    means = metrics.summarise(per_user)
    for metric in RANKING_METRICS:
        row.update({f"{metric}@{k}": means[f"{metric}@{k}"] for k in context.ks})
    row.update(_beyond(outcome.top[:, : context.beyond_k], setup, context))
    row.update(fit_seconds=outcome.fit_seconds, recommend_seconds=outcome.recommend_seconds)
    row["error"] = None
    return row, per_user


def _beyond(top: np.ndarray, setup: EvaluationSetup, context: _BeyondContext) -> dict[str, float]:
    n_items = setup.data.n_items
    out = {
        "coverage": metrics.catalog_coverage(top, n_items),
        "diversity": math.nan,
        "novelty": metrics.novelty(top, setup.popularity, n_users=setup.data.n_users),
        "popularity_bias": metrics.popularity_bias(top, setup.popularity),
        "personalisation": metrics.personalisation(top, n_items),
    }
    if context.categories is not None:
        cats = context.categories[:n_items]
        out["diversity_category"] = metrics.intra_list_diversity(top, item_categories=cats)
    if context.embeddings is not None:
        emb = context.embeddings
        out["diversity_embedding"] = metrics.intra_list_diversity(top, item_embeddings=emb)
    out["diversity"] = out.get("diversity_category", out.get("diversity_embedding", math.nan))
    return out


def _by_k_rows(
    name: str,
    outcome: _Outcome,
    per_user: dict[str, np.ndarray] | None,
    setup: EvaluationSetup,
    context: _BeyondContext,
) -> list[tuple[str, int, str, float]]:
    if per_user is None or outcome.top is None:
        return []
    means = metrics.summarise(per_user)
    rows = [(name, k, m, means[f"{m}@{k}"]) for k in context.ks for m in RANKING_METRICS]
    for k in context.ks:
        top = outcome.top[:, :k]
        rows.append((name, k, "coverage", metrics.catalog_coverage(top, setup.data.n_items)))
        rows.append((name, k, "popularity_bias", metrics.popularity_bias(top, setup.popularity)))
    return rows


def _segments(
    name: str,
    outcome: _Outcome,
    per_user: dict[str, np.ndarray],
    setup: EvaluationSetup,
    context: _BeyondContext,
    by_category: bool,
) -> pd.DataFrame:
    labels = metrics.user_segments(setup.train_events)
    frames = [_tag(metrics.metrics_by_segment(per_user, labels), name, "user_activity")]
    if by_category and context.segment_of_column is not None and outcome.top is not None:
        frames.append(_tag(_category_metrics(outcome.top, setup, context), name, "category"))
    return pd.concat(frames, ignore_index=True)


def _tag(frame: pd.DataFrame, model: str, dimension: str) -> pd.DataFrame:
    out = frame.reset_index()
    out.insert(0, "dimension", dimension)
    out.insert(0, "model", model)
    return out


def _category_metrics(
    top: np.ndarray, setup: EvaluationSetup, context: _BeyondContext
) -> pd.DataFrame:
    """Metrics against the test items of one category at a time, for users who had one."""
    assert context.segment_of_column is not None
    segment_of_column = context.segment_of_column
    rows = []
    for segment in pd.unique(segment_of_column[setup.truth.indices]):
        keep = (segment_of_column == segment).astype(np.float32)
        truth = sp.csr_matrix(setup.truth @ sp.diags(keep))
        truth.eliminate_zeros()
        users = metrics.users_with_truth(truth)
        means = metrics.summarise(metrics.ranking_metrics(top[users], truth[users], context.ks))
        rows.append({"segment": segment, "users": len(users), **means})
    frame = pd.DataFrame(rows).sort_values("users", ascending=False)
    return frame.set_index("segment")


# --------------------------------------------------------------------------- summaries


def _split_summary(split: Split) -> dict[str, Any]:
    segments = split.segments_of_test()
    summary: dict[str, Any] = {
        "split": split.protocol,
        "split_params": dict(split.params),
        "train_rows": len(split.train),
        "validation_rows": len(split.validation),
        "test_rows": len(split.test),
        "test_users": int(split.test["user_id"].nunique()),
        "test_items": int(split.test["item_id"].nunique()),
        "validation_cut": _iso(split.validation_cut),
        "test_cut": _iso(split.test_cut),
        **segments.summary(),
    }
    for part in ("train", "test"):
        frame = getattr(split, part)
        if "timestamp" in frame.columns and len(frame):
            times = pd.to_datetime(frame["timestamp"], utc=True)
            summary[f"{part}_start"] = _iso(times.min())
            summary[f"{part}_end"] = _iso(times.max())
    return summary


def _iso(moment: pd.Timestamp | None) -> str | None:
    return None if moment is None or pd.isna(moment) else pd.Timestamp(moment).isoformat()
