"""The recommendation family: ids, matrix factorisation, top-k, fallbacks, the gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from mlaas.families.base import InvalidInstance
from mlaas.families.recommendation import (
    BiasedMatrixFactorization,
    IdIndex,
    RecommendationFamily,
    baseline_metrics,
    recommend,
)
from mlaas.models import NetworkModel
from mlaas.settings import LoadSettings, MatrixFactorizationSettings, ValidateSettings
from mlaas.validate import check_frame

family = RecommendationFamily()
RATINGS = pd.DataFrame(
    {
        "user_id": ["u1", "u1", "u2", "u2", "u3"],
        "item_id": ["a", "b", "a", "c", "a"],
        "rating": [5.0, 3.0, 4.0, 2.0, 5.0],
    }
)


def test_movielens_100k_loads_as_string_ids_and_ratings() -> None:
    table = family.load(LoadSettings(source="movielens_100k"))
    assert table.num_rows == 100_000
    assert table.schema.field("user_id").type == "string"
    ratings = table.column("rating").to_numpy()
    assert ratings.min() == 1 and ratings.max() == 5


def test_ids_map_to_rows_and_unknown_ids_to_the_zero_row() -> None:
    index = IdIndex().fit(RATINGS[["user_id", "item_id"]])
    pairs = index.transform(pd.DataFrame({"user_id": ["u2", "nobody"], "item_id": ["c", "a"]}))
    assert pairs.tolist() == [[2, 3], [0, 1]]
    assert index.popularity == [0, 3, 1, 1]  # row 0 is the unknown item
    with pytest.raises(InvalidInstance, match="user_id 'nobody' is unknown"):
        index.check(pd.DataFrame({"user_id": ["nobody"], "item_id": ["a"]}))


def test_recommendations_skip_seen_items_and_fall_back_to_popularity(tmp_path: Path) -> None:
    index = IdIndex().fit(RATINGS[["user_id", "item_id"]])
    network = BiasedMatrixFactorization(
        index.user_count, index.item_count, MatrixFactorizationSettings(factors=4), mean=3.0
    )
    card = family.model_card(
        pa.Table.from_pandas(RATINGS),
        LoadSettings(source="movielens_100k"),
        MatrixFactorizationSettings(factors=4),
    )
    model = NetworkModel(card, index, network)
    items, fallback = recommend(model, "u1", k=5)
    assert fallback is None and [item for item, _ in items] == ["c"]  # u1 has seen a and b
    items, fallback = recommend(model, "stranger", k=2)
    assert fallback == "popularity" and items[0][0] == "a"
    assert network(torch.tensor([[0, 0]])).item() == pytest.approx(3.0)  # unseen: the mean


def test_the_penalty_grows_with_the_factors() -> None:
    network = BiasedMatrixFactorization(3, 3, MatrixFactorizationSettings(factors=2), 3.0)
    pairs = torch.tensor([[1, 1], [2, 2]])
    small = network.penalty(pairs).item()
    with torch.no_grad():
        network.user_factors.weight.mul_(10)
    assert network.penalty(pairs).item() > small > 0


def test_baselines_are_reported_on_the_same_split() -> None:
    baselines = baseline_metrics(RATINGS, RATINGS)
    assert baselines["baseline_bias_only_rmse"] < baselines["baseline_global_mean_rmse"]


def test_the_gate_refuses_duplicate_pairs_and_ratings_out_of_range(tmp_path: Path) -> None:
    load = LoadSettings(source="movielens_100k")
    frame = family.validation_frame(family.load(load), load)
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)
    frame.loc[10, "rating"] = 7.0
    ok, result = check_frame(
        frame, family.expectations(frame, load, ValidateSettings(), None), "t", tmp_path
    )
    failed = {r["expectation_config"]["type"] for r in result["results"] if not r["success"]}
    assert not ok
    assert failed == {
        "expect_compound_columns_to_be_unique",
        "expect_column_values_to_be_between",
    }
    assert np.isfinite(frame["rating"]).all()
