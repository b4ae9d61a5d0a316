"""MovieLens 100k: how far side information and a non-linear model move the best NDCG@10.

An exploration behind the "Why not 0.50" analysis of bench_movielens.py, on the same protocol
(stratified 75/25 split, seed 42, per item and per user; top 10, training items excluded;
the project's `prepare` and metrics). Two models outside the engine:

1. collective EASE: EASE whose Gram matrix also sees the items' genres and release-year
   buckets as pseudo-users (γ² A Aᵀ added to XᵀX, weights γg and γy) and, optionally, the
   users' demographics as extra input columns (one-hot gender, age bucket, occupation,
   weight β): B = EASE([X | βF]); a user's scores are [h | βf] · B[:, items];
2. Mult-VAE (Liang et al. 2018) on [history | demographics], torch on the CPU;

and their blend z(collective) + w · z(VAE), z = per-user z-score over recommendable items.
Every hyper-parameter and the weight w are picked on a validation split carved from the
training part only (stratified 20%, seed 43); the models are then refitted on the training
part and the test part is read once. The model family itself was chosen while exploring on
test data, so read the results as "what this family can do", not as a tuned engine model.

Needs the `deep` extra (torch). Usage: python benchmarks/explore_movielens_side_information.py
(about 5 minutes on one core). Prints its table; BENCHMARKS.md quotes it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from nextbuy.datasets import load_movielens_100k
from nextbuy.evaluation import metrics
from nextbuy.evaluation.runner import fill_with_popular, prepare
from nextbuy.evaluation.splits import stratified_split

SEED, VALIDATION_SEED, VALIDATION_FRACTION = 42, 43, 0.2
AGE_EDGES = [0, 18, 25, 30, 35, 45, 50, 56, 200]
YEAR_EDGES = [0, 1960, 1970, 1980, 1990, 1993, 1995, 1996, 1997, 3000]
GRID = {"reg": (300, 500, 800), "genre": (2, 3, 4), "year": (0, 3, 5), "people": (0, 1)}
WEIGHTS = (0.0, 0.4, 0.7, 1.0, 1.5, 2.0, 3.0)
VAE = {"epochs": 200, "hidden": 200, "latent": 64, "kl_max": 0.2, "dropout": 0.5, "lr": 1e-3}


@dataclass
class Fold:
    """One train → held-out pair as the evaluation sees it, with dense side matrices."""

    setup: object
    train: np.ndarray  # training users × items, binary
    histories: np.ndarray  # evaluated users × items, binary
    rows: np.ndarray  # evaluated user → row of `train`
    genres: np.ndarray  # items × genres
    years: np.ndarray  # items × year buckets
    people: np.ndarray  # training users × demographic one-hots


def fold(train: pd.DataFrame, test: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> Fold:
    setup = prepare(train, test, "standard")
    matrix = sp.csr_matrix(setup.data.matrix, dtype=np.float64)
    matrix.data[:] = 1.0
    histories = sp.csr_matrix(setup.histories, dtype=np.float64)
    histories.data[:] = 1.0
    user_index = pd.Index(setup.data.user_ids).astype(str)
    rows = user_index.get_indexer(pd.Index(setup.user_ids).astype(str))
    item_ids = pd.Index(setup.data.item_ids).astype(str)
    genres, years = item_sides(items, item_ids)
    return Fold(
        setup, matrix.toarray(), histories.toarray(), rows, genres, years,
        demographics(users, user_index),
    )  # fmt: skip


def item_sides(items: pd.DataFrame, ids: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    frame = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id").loc[ids]
    attributes = frame["attributes"]
    genres = attributes.map(lambda a: "|".join(a.get("genres") or ["unknown"]))
    released = pd.to_datetime(attributes.map(lambda a: a.get("release_date")), errors="coerce")
    year = released.dt.year.fillna(1995)
    buckets = pd.cut(year, YEAR_EDGES, right=False).astype(str)
    return (
        genres.str.get_dummies("|").to_numpy(float),
        pd.get_dummies(buckets).to_numpy(float),
    )


def demographics(users: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    attributes = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")
    found = attributes.loc[ids, "attributes"]
    table = pd.DataFrame(
        {
            "gender": found.map(lambda a: a.get("gender")),
            "age": pd.cut(found.map(lambda a: a.get("age")).astype(float), AGE_EDGES, right=False),
            "occupation": found.map(lambda a: a.get("occupation")),
        }
    ).astype(str)
    return pd.get_dummies(table).to_numpy(float)


def ease_weights(gram: np.ndarray, reg: float) -> np.ndarray:
    inverse = np.linalg.inv(gram + reg * np.eye(len(gram)))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def collective_ease(f: Fold, reg: float, genre: float, year: float, people: float) -> np.ndarray:
    """Scores of the evaluated users (rows) for every item (columns)."""
    n = f.train.shape[1]
    inputs = np.hstack([f.train, people * f.people]) if people else f.train
    gram = inputs.T @ inputs
    gram[:n, :n] += genre**2 * (f.genres @ f.genres.T) + year**2 * (f.years @ f.years.T)
    weights = ease_weights(gram, reg)
    asked = np.hstack([f.histories, people * f.people[f.rows]]) if people else f.histories
    return asked @ weights[:, :n]


def mult_vae(f: Fold, seed: int = 0) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    target = torch.tensor(f.train, dtype=torch.float32)
    inputs = torch.tensor(np.hstack([f.train, f.people]), dtype=torch.float32)
    hidden, latent = VAE["hidden"], VAE["latent"]
    encoder = torch.nn.Sequential(
        torch.nn.Linear(inputs.shape[1], hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, 2 * latent),
    )
    decoder = torch.nn.Sequential(
        torch.nn.Linear(latent, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, target.shape[1])
    )
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=VAE["lr"])
    users, batch = len(target), 100
    steps = VAE["epochs"] * ((users + batch - 1) // batch)
    step = 0
    for _ in range(VAE["epochs"]):
        order = torch.randperm(users)
        for start in range(0, users, batch):
            picked = order[start : start + batch]
            x = torch.nn.functional.normalize(inputs[picked], dim=1)
            x = torch.nn.functional.dropout(x, VAE["dropout"], training=True)
            mean, log_var = encoder(x).split(latent, dim=1)
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
            likelihood = (torch.log_softmax(decoder(z), 1) * target[picked]).sum(1).mean()
            kl = (-0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1)).mean()
            # KL weight annealed over the first 80% of the steps
            anneal = VAE["kl_max"] * min(1.0, step / (0.8 * steps))
            loss = -likelihood + anneal * kl
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
    with torch.no_grad():
        x = torch.nn.functional.normalize(inputs[torch.as_tensor(f.rows)], dim=1)
        return decoder(encoder(x)[:, :latent]).numpy().astype(np.float64)


def ndcg(f: Fold, scores: np.ndarray, k: int = 10) -> float:
    scores = np.where(f.setup.exclude.toarray() > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.where(np.isfinite(np.take_along_axis(scores, top, 1)), top, -1)
    top = fill_with_popular(top, f.setup)
    return float(np.mean(metrics.ranking_metrics(top, f.setup.truth, ks=(k,))[f"ndcg@{k}"]))


def z_scores(f: Fold, scores: np.ndarray) -> np.ndarray:
    """Per user, over the items that may be recommended (training items left out)."""
    free = np.where(f.setup.exclude.toarray() > 0, np.nan, scores)
    spread = np.nanstd(free, axis=1, keepdims=True)
    return (scores - np.nanmean(free, axis=1, keepdims=True)) / np.where(spread > 0, spread, 1)


def run(by: str, interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> dict:
    outer = stratified_split(interactions, test_fraction=0.25, by=by, seed=SEED)  # type: ignore[arg-type]
    inner = stratified_split(outer.train, VALIDATION_FRACTION, by=by, seed=VALIDATION_SEED)  # type: ignore[arg-type]
    validation = fold(inner.train, inner.test, items, users)
    tried = [
        (
            ndcg(validation, collective_ease(validation, *values)),
            dict(zip(GRID, values, strict=True)),
        )
        for values in itertools.product(*GRID.values())
    ]
    _, best = max(tried, key=lambda pair: pair[0])
    ease_z = z_scores(validation, collective_ease(validation, **best))
    vae_z = z_scores(validation, mult_vae(validation))
    _, weight = max((ndcg(validation, ease_z + w * vae_z), w) for w in WEIGHTS)
    test = fold(outer.train, outer.test, items, users)
    started = time.perf_counter()
    collective = collective_ease(test, **best)
    collective_s = time.perf_counter() - started
    started = time.perf_counter()
    vae = mult_vae(test)
    vae_s = time.perf_counter() - started
    plain = test.histories @ ease_weights(test.train.T @ test.train, 500.0)
    return {
        "split": f"per {by}",
        "EASE λ=500": ndcg(test, plain),
        "collective EASE": ndcg(test, collective),
        "Mult-VAE": ndcg(test, vae),
        "blend": ndcg(test, z_scores(test, collective) + weight * z_scores(test, vae)),
        "picked": f"{best}, w={weight}",
        "fit s (collective / VAE)": f"{collective_s:.1f} / {vae_s:.0f}",
    }


def main() -> None:
    threadpool_limits(1)
    data = load_movielens_100k()
    if data.users is None:
        raise SystemExit("the MovieLens 100k users table (demographics) is missing")
    rows = [run(by, data.interactions, data.items, data.users) for by in ("item", "user")]
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
