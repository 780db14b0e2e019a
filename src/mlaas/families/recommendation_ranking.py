"""Top-k lists of a trained recommender (served by `/recommend`), and the metrics that judge
them: precision@k and recall@k, and the baselines a factorisation must beat."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlaas.core.confidence import as_metrics, mean_interval
from mlaas.families.inputs import ITEM, RATING, USER
from mlaas.families.recommendation_models import UNKNOWN, IdIndex


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    predicted_rating: float
    """The model's rating of the item by this user, clamped to the rating range."""
    rating_count: int
    """The item's ratings in the training split (what the popularity fallback ranks by)."""


@dataclass(frozen=True)
class Recommendations:
    items: list[Recommendation]
    fallback: Literal["popularity"] | None
    """`popularity` for a user the model was not trained on: the most rated items, in order."""


def recommend(
    model: Any, user_id: str, k: int, held_out: Collection[str] = frozenset()
) -> Recommendations:
    """The user's top-k items by predicted rating, leaving out every item they rated; the most
    rated ones for a user the model was not trained on.

    `held_out`: rated items to offer all the same (evaluation's test items, which it hides)."""
    index: IdIndex = model.preprocessor
    row = index.user_rows.get(user_id, UNKNOWN)
    # The unknown row has zero factors and bias: an unknown user's rating is mu + b_item.
    predicted = model.network.scores(row).float().numpy()
    popularity = np.asarray(index.popularity)
    offered = np.ones(index.item_count, dtype=bool)
    offered[UNKNOWN] = False
    hidden = {index.item_rows[item] for item in held_out if item in index.item_rows}
    offered[[r for r in index.rated.get(user_id, []) if r not in hidden]] = False
    candidates = np.flatnonzero(offered)
    ranking = predicted if row != UNKNOWN else popularity
    top = candidates[np.argsort(-ranking[candidates], kind="stable")[:k]]
    low, high = model.card.target_range or (-np.inf, np.inf)
    return Recommendations(
        items=[
            Recommendation(
                item_id=index.items[i - 1],
                predicted_rating=round(float(np.clip(predicted[i], low, high)), 6),
                rating_count=int(popularity[i]),
            )
            for i in top
        ],
        fallback=None if row != UNKNOWN else "popularity",
    )


def ranking_metrics(
    model: Any, test: pd.DataFrame, k: int, relevant_rating: float
) -> dict[str, float]:
    """precision@k and recall@k of each user's top-k items against their held-out items rated
    `relevant_rating` or more, averaged over users with at least one; each with the bootstrap
    interval of that mean over users (`mlaas.core.confidence`).

    As served, the lists leave out what the user rated, except the test split's items, which
    they are scored on."""
    held_out = test.groupby(USER)[ITEM].agg(set)
    relevant = test[test[RATING].astype(float) >= relevant_rating].groupby(USER)[ITEM].agg(set)
    precisions, recalls = [], []
    for user, items in relevant.items():
        listed = recommend(model, str(user), k, held_out=held_out[user]).items
        hits = len({item.item_id for item in listed} & items)
        precisions.append(hits / k)
        recalls.append(hits / len(items))
    per_user = {f"test_precision_at_{k}": precisions, f"test_recall_at_{k}": recalls}
    metrics = {name: float(np.mean(values)) if values else 0.0 for name, values in per_user.items()}
    intervals = {
        name: mean_interval(np.asarray(v), model.card.seed) for name, v in per_user.items()
    }
    return metrics | as_metrics({name: i for name, i in intervals.items() if i is not None})


def baseline_metrics(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, float]:
    """RMSE of the global mean, and of mean + regularised user and item biases (the bars an
    MF model must clear), on the same test split."""
    ratings = train[RATING].astype(float)
    mean = float(ratings.mean())
    truth = test[RATING].astype(float).to_numpy()
    damping = 10.0  # shrink the biases of users and items with few ratings towards zero
    item_bias = (ratings - mean).groupby(train[ITEM]).agg(lambda r: r.sum() / (len(r) + damping))
    residual = ratings - mean - train[ITEM].map(item_bias).to_numpy()
    user_bias = residual.groupby(train[USER]).agg(lambda r: r.sum() / (len(r) + damping))
    biased = (
        mean
        + test[USER].map(user_bias).fillna(0.0).to_numpy()
        + test[ITEM].map(item_bias).fillna(0.0).to_numpy()
    )

    def rmse(predicted: np.ndarray) -> float:
        return float(np.sqrt(np.mean((predicted - truth) ** 2)))

    return {
        "baseline_global_mean_rmse": rmse(np.full_like(truth, mean)),
        "baseline_bias_only_rmse": rmse(biased),
    }
