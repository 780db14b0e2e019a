"""The recommendation family: (user, item, rating) triples in, predicted ratings and top-k out.

Shipped data: MovieLens 100k (the `recbole` package's example file, read by path). Or the
user's CSV of user, item and rating columns. The model is biased matrix factorisation,
rating = mu + b_user + b_item + <p_user, q_item>, trained with Lightning; evaluation logs
global-mean and bias-only baselines beside it, and precision@k / recall@k of its top-k lists.

Serving: `/predict` rates (user, item) pairs of the training data; `/recommend` lists a user's
top-k items by predicted rating, never one the user rated anywhere in the data set (training,
validation or test split: the index remembers all of them, see `IdIndex.remember`). A user the
model was not trained on gets the items with the most training ratings (`fallback:
popularity`). Each item carries both `predicted_rating` (the model's, clamped to the rating
range; for a user it was not trained on, the mean plus the item's bias) and `rating_count` (its
ratings in the training split): one meaning per field, whatever the list is ranked by.

The served model is the evaluated one, not refitted on all the data after evaluation: its test
metrics, its champion comparison and its registered files describe exactly what answers, and
refitting would serve weights nobody measured. The price: users and items that only the
validation or test split holds are unknown to `/predict`, and such users get the popularity
fallback (without the items they rated).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from pydantic import ConfigDict, Field, create_model
from torch import nn

from mlaas.core.confidence import as_metrics, mean_interval
from mlaas.core.errors import SettingsError
from mlaas.core.settings import (
    EvaluateSettings,
    LoadSettings,
    MatrixFactorizationSettings,
    ModelSettings,
    ValidateSettings,
)
from mlaas.families.base import (
    InvalidInstance,
    ModelCard,
    NetworkRecipe,
    Recipe,
    TaskName,
    as_text,
    package_file,
    require_columns,
    set_by,
    shipped_source,
    unsupported_model,
)
from mlaas.families.user_files import read_user_table

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

USER, ITEM, RATING = "user_id", "item_id", "rating"
UNKNOWN = 0  # index of every user or item not seen in training: zero factors and bias


def _read_movielens_100k() -> pd.DataFrame:
    path = package_file("recbole", "recbole/dataset_example/ml-100k/ml-100k.inter")
    frame = pd.read_csv(path, sep="\t", dtype=str)
    frame.columns = [name.split(":")[0] for name in frame.columns]  # "user_id:token" -> user_id
    return frame[[USER, ITEM, RATING]]


SOURCES = {"movielens_100k": _read_movielens_100k}


class IdIndex:
    """User and item ids to embedding rows (0: unseen), what each user rated, item popularity."""

    FILE = "ids.json"

    def __init__(
        self,
        users: list[str] | None = None,
        items: list[str] | None = None,
        rated: dict[str, list[int]] | None = None,
        popularity: list[int] | None = None,
    ) -> None:
        self.users = users or []
        self.items = items or []
        # Each user's rated items as rows: the training split's after `fit`, every split's
        # after `remember` (users the model was not trained on included).
        self.rated = rated or {}
        self.popularity = popularity or []  # each item row's training ratings (row 0: none)
        self.user_rows = {user: row + 1 for row, user in enumerate(self.users)}
        self.item_rows = {item: row + 1 for row, item in enumerate(self.items)}

    def fit(self, features: pd.DataFrame) -> IdIndex:
        users = sorted(features[USER].unique().tolist())
        items = sorted(features[ITEM].unique().tolist())
        vocabulary = IdIndex(users, items)
        item_rows = features[ITEM].map(vocabulary.item_rows)
        counts = np.bincount(item_rows.to_numpy(), minlength=len(items) + 1)
        return IdIndex(users, items, vocabulary.rated_rows(features), counts.tolist())

    def remember(self, features: pd.DataFrame) -> IdIndex:
        """This index, knowing each user's rated items in `features` (all the data) instead of
        only the training rows, so that serving never recommends an item its user rated."""
        return IdIndex(self.users, self.items, self.rated_rows(features), self.popularity)

    def rated_rows(self, features: pd.DataFrame) -> dict[str, list[int]]:
        """Each user's rated items in `features`, as rows (items this index lacks left out: it
        never recommends them)."""
        rows = features[ITEM].map(self.item_rows)
        known = rows.notna()
        by_user = rows[known].astype(np.int64).groupby(features[USER][known])
        return by_user.agg(lambda user_rows: sorted(set(user_rows.tolist()))).to_dict()

    @property
    def user_count(self) -> int:
        return len(self.users) + 1

    @property
    def item_count(self) -> int:
        return len(self.items) + 1

    def transform(self, features: pd.DataFrame) -> torch.Tensor:
        users = features[USER].map(self.user_rows).fillna(UNKNOWN).to_numpy(dtype=np.int64)
        items = features[ITEM].map(self.item_rows).fillna(UNKNOWN).to_numpy(dtype=np.int64)
        return torch.from_numpy(np.stack([users, items], axis=1))

    def check(self, features: pd.DataFrame) -> None:
        unknown_user = next((u for u in features[USER] if u not in self.user_rows), None)
        if unknown_user is not None:
            raise InvalidInstance(
                f"{USER} {unknown_user!r} is unknown to this model (not in its training data): "
                "/predict rates the users it was trained on; POST /recommend answers any user, "
                "an unknown one with the most rated items"
            )
        unknown_item = next((i for i in features[ITEM] if i not in self.item_rows), None)
        if unknown_item is not None:
            raise InvalidInstance(
                f"{ITEM} {unknown_item!r} is unknown to this model (not in its training data): "
                "send an item_id that the training data rates, such as one POST /recommend lists"
            )

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "users": self.users,
            "items": self.items,
            "rated": self.rated,
            "popularity": self.popularity,
        }
        (folder / self.FILE).write_text(json.dumps(payload))

    @classmethod
    def load(cls, folder: Path) -> IdIndex:
        payload = json.loads((folder / cls.FILE).read_text())
        return cls(payload["users"], payload["items"], payload["rated"], payload["popularity"])


class BiasedMatrixFactorization(nn.Module):
    """mu + b_user + b_item + <p_user, q_item>; row 0 (unseen ids) stays zero."""

    def __init__(
        self, users: int, items: int, cfg: MatrixFactorizationSettings, mean: float
    ) -> None:
        super().__init__()
        self.regularization = cfg.regularization
        self.user_factors = nn.Embedding(users, cfg.factors)
        self.item_factors = nn.Embedding(items, cfg.factors)
        self.user_bias = nn.Embedding(users, 1)
        self.item_bias = nn.Embedding(items, 1)
        self.mean = nn.Parameter(torch.tensor(float(mean)))
        with torch.no_grad():
            for factors in (self.user_factors, self.item_factors):
                nn.init.normal_(factors.weight, 0.0, 0.1)
                factors.weight[UNKNOWN].zero_()
            for bias in (self.user_bias, self.item_bias):
                nn.init.zeros_(bias.weight)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        users, items = pairs[:, 0], pairs[:, 1]
        dot = (self.user_factors(users) * self.item_factors(items)).sum(dim=1)
        biases = self.user_bias(users).squeeze(1) + self.item_bias(items).squeeze(1)
        return self.mean + biases + dot

    def penalty(self, pairs: torch.Tensor) -> torch.Tensor:
        """L2 on the factors and biases this batch used (the classic SVD regularisation)."""
        users, items = pairs[:, 0], pairs[:, 1]
        squares = (
            self.user_factors(users).pow(2).sum(dim=1)
            + self.item_factors(items).pow(2).sum(dim=1)
            + self.user_bias(users).squeeze(1).pow(2)
            + self.item_bias(items).squeeze(1).pow(2)
        )
        return self.regularization * squares.mean()

    @torch.no_grad()
    def scores(self, user_row: int) -> torch.Tensor:
        """The predicted rating of every item by one user."""
        user = self.user_factors.weight[user_row]
        return (
            self.mean
            + self.user_bias.weight[user_row, 0]
            + self.item_bias.weight[:, 0]
            + self.item_factors.weight @ user
        )


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


class RecommendationFamily:
    name = "recommendation"
    models: tuple[str, ...] = ("matrix_factorization",)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(SOURCES)

    def task(self, load: LoadSettings) -> TaskName:
        return "rating"

    def target_column(self, load: LoadSettings) -> str:
        return RATING

    def load(self, load: LoadSettings) -> pa.Table:
        read = shipped_source(SOURCES, load, self.name, "a CSV of user, item and rating")
        if read is not None:
            frame = read()
        else:
            columns = [load.user_column, load.item_column, load.target]
            if None in columns:
                raise SettingsError(
                    "load.user_column, load.item_column and load.target: name the user, "
                    "item and rating columns"
                )
            frame = read_user_table(load.data_path)
            require_columns(frame, [str(c) for c in columns], "load")
            frame = frame[columns].set_axis([USER, ITEM, RATING], axis=1)
        return pa.table(
            {
                USER: pa.array(as_text(frame[USER]), pa.string()),
                ITEM: pa.array(as_text(frame[ITEM]), pa.string()),
                RATING: pa.array(pd.to_numeric(frame[RATING], errors="coerce"), pa.float64()),
            }
        )

    def validation_frame(self, table: pa.Table, load: LoadSettings) -> pd.DataFrame:
        return table.to_pandas()

    def reference_profile(self, frame: pd.DataFrame, load: LoadSettings) -> dict[str, Any]:
        return {}

    def expectations(
        self,
        frame: pd.DataFrame,
        load: LoadSettings,
        cfg: ValidateSettings,
        reference: dict[str, Any] | None,
    ) -> list[Expectation]:
        from great_expectations import expectations as gxe

        low, high = load.rating_range
        return [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=cfg.min_rows, meta=set_by("validate.min_rows")
            ),
            gxe.ExpectColumnValuesToNotBeNull(column=USER),
            gxe.ExpectColumnValuesToNotBeNull(column=ITEM),
            gxe.ExpectColumnValuesToNotBeNull(column=RATING),
            gxe.ExpectColumnValuesToBeBetween(
                column=RATING, min_value=low, max_value=high, meta=set_by("load.rating_range")
            ),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=[USER, ITEM]),
        ]

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        if not isinstance(model, MatrixFactorizationSettings):
            raise unsupported_model(self, model)
        return ModelCard(
            family=self.name,
            task="rating",
            dataset=load.dataset_name,
            target=RATING,
            model=model,
            target_range=list(load.rating_range),
            inputs={},
        )

    def features(self, table: pa.Table, card: ModelCard) -> pd.DataFrame:
        return table.select([USER, ITEM]).to_pandas()

    def recipe(self, card: ModelCard) -> Recipe:
        cfg = card.model
        assert isinstance(cfg, MatrixFactorizationSettings)
        low, high = card.target_range or (1.0, 5.0)
        return NetworkRecipe(
            new_preprocessor=IdIndex,
            load_preprocessor=IdIndex.load,
            network=lambda index: BiasedMatrixFactorization(
                index.user_count, index.item_count, cfg, mean=(low + high) / 2
            ),
            remember_all_data=IdIndex.remember,
        )

    def instance_type(self, card: ModelCard) -> Any:
        # Ids as the data has them: text, or whole numbers (3.5 or "" is not an id).
        identifier = (
            Annotated[str, Field(min_length=1, max_length=256)] | Annotated[int, Field(strict=True)]
        )
        return create_model(
            "RatingInstance",
            __config__=ConfigDict(extra="forbid"),
            user_id=(identifier, Field(description="a user id from the training data")),
            item_id=(identifier, Field(description="an item id from the training data")),
        )

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> pd.DataFrame:
        rows = [item.model_dump() if hasattr(item, "model_dump") else item for item in instances]
        return pd.DataFrame(
            {
                USER: [str(row[USER]) for row in rows],
                ITEM: [str(row[ITEM]) for row in rows],
            }
        )

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        return table.select([USER, ITEM]).slice(0, count).to_pylist()

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        assert isinstance(model.card.model, MatrixFactorizationSettings)
        train_frame, test_frame = train.to_pandas(), test.to_pandas()
        return ranking_metrics(
            model, test_frame, cfg.top_k, model.card.model.relevant_rating
        ) | baseline_metrics(train_frame, test_frame)
