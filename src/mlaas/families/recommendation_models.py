"""The recommendation family's model: biased matrix factorisation over an index of the ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import MatrixFactorizationSettings
from mlaas.families.base import InvalidInstance, NetworkRecipe
from mlaas.families.inputs import ITEM, USER

UNKNOWN = 0  # index of every user or item not seen in training: zero factors and bias


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


def matrix_factorization_recipe(card: ModelCard) -> NetworkRecipe:
    """An index of the training ids, then factors started at the middle of the rating range."""
    cfg = card.model_as(MatrixFactorizationSettings)
    low, high = card.target_range or (1.0, 5.0)
    return NetworkRecipe(
        new_preprocessor=IdIndex,
        load_preprocessor=IdIndex.load,
        network=lambda index: BiasedMatrixFactorization(
            index.user_count, index.item_count, cfg, mean=(low + high) / 2
        ),
        remember_all_data=IdIndex.remember,
    )
