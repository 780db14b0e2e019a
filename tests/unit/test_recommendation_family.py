"""The recommendation family: ids, matrix factorisation, top-k, fallbacks, the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from mlaas.core.model_settings import MatrixFactorizationSettings
from mlaas.core.settings import LoadSettings, ValidateSettings
from mlaas.families.base import InvalidInstance
from mlaas.families.recommendation import RecommendationFamily
from mlaas.families.recommendation_models import BiasedMatrixFactorization, IdIndex
from mlaas.families.recommendation_ranking import baseline_metrics, recommend
from mlaas.modeling.models import NetworkModel
from mlaas.stages.validate import check_frame

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


def _model(index: IdIndex) -> NetworkModel:
    network = BiasedMatrixFactorization(
        index.user_count, index.item_count, MatrixFactorizationSettings(factors=4), mean=3.0
    )
    card = family.model_card(
        pa.Table.from_pandas(RATINGS),
        LoadSettings(source="movielens_100k"),
        MatrixFactorizationSettings(factors=4),
    )
    return NetworkModel(card, index, network)


def _listed(model: NetworkModel, user: str, k: int = 10, **held: Any) -> list[str]:
    return [item.item_id for item in recommend(model, user, k, **held).items]


def test_recommendations_skip_seen_items_and_fall_back_to_popularity() -> None:
    model = _model(IdIndex().fit(RATINGS[["user_id", "item_id"]]))
    recommended = recommend(model, "u1", k=5)
    assert recommended.fallback is None
    assert [item.item_id for item in recommended.items] == ["c"]  # u1 has seen a and b
    recommended = recommend(model, "stranger", k=2)
    assert recommended.fallback == "popularity" and recommended.items[0].item_id == "a"
    assert model.network(torch.tensor([[0, 0]])).item() == pytest.approx(3.0)  # unseen: the mean


# The rows the model is not fitted on: u1 rated d, u2 rated b, and u4 is in them alone.
HELD_OUT_RATINGS = pd.DataFrame(
    {"user_id": ["u1", "u2", "u4", "u4"], "item_id": ["d", "b", "a", "new"], "rating": 4.0}
)
TRAINING_RATINGS = pd.concat(
    [RATINGS, pd.DataFrame({"user_id": ["u3"], "item_id": ["d"], "rating": [1.0]})],
    ignore_index=True,
)


def test_recommendations_leave_out_items_rated_in_any_split(tmp_path: Path) -> None:
    index = IdIndex().fit(TRAINING_RATINGS[["user_id", "item_id"]])
    every_row = pd.concat([TRAINING_RATINGS, HELD_OUT_RATINGS], ignore_index=True)
    model = _model(index.remember(every_row[["user_id", "item_id"]]))
    assert _listed(model, "u1") == ["c"]  # a, b (training) and d (held out) are rated
    assert _listed(model, "u2") == ["d"]
    fallback = recommend(model, "u4", k=10)  # only in the held-out rows: unknown to the model
    assert fallback.fallback == "popularity"
    assert [item.item_id for item in fallback.items] == ["b", "c", "d"]  # not a, u4's own
    # Evaluation hides the test items from the user's ratings, to score the list on them.
    assert sorted(_listed(model, "u1", held_out={"d"})) == ["c", "d"]
    # Saved and loaded with the model: the served index knows it too.
    model.preprocessor.save(tmp_path)
    assert _listed(_model(IdIndex.load(tmp_path)), "u2") == ["d"]


def test_each_item_has_a_predicted_rating_and_a_rating_count_whatever_the_ranking() -> None:
    index = IdIndex().fit(TRAINING_RATINGS[["user_id", "item_id"]])
    model = _model(index)
    with torch.no_grad():  # u3 would rate b and c above 5: clamped into the rating range
        model.network.item_bias.weight[[2, 3], 0] = torch.tensor([4.0, 2.5])
    personal = recommend(model, "u3", k=5)
    assert personal.fallback is None
    assert [(i.item_id, i.predicted_rating, i.rating_count) for i in personal.items] == [
        ("b", 5.0, 1),
        ("c", 5.0, 1),
    ]
    popular = recommend(model, "stranger", k=5)
    counts = [item.rating_count for item in popular.items]
    assert counts == [3, 1, 1, 1] == sorted(counts, reverse=True)  # a, b, c, d
    # Still a rating, not a count: the mean plus the item's bias, in the rating range.
    assert [item.predicted_rating for item in popular.items] == [3.0, 5.0, 5.0, 3.0]


def test_each_unknown_id_is_named_with_its_own_field_and_what_to_do() -> None:
    index = IdIndex().fit(RATINGS[["user_id", "item_id"]])
    with pytest.raises(InvalidInstance) as unknown_user:
        index.check(pd.DataFrame({"user_id": ["nobody"], "item_id": ["a"]}))
    assert str(unknown_user.value).startswith("user_id 'nobody' is unknown")
    assert "/recommend" in str(unknown_user.value)
    with pytest.raises(InvalidInstance) as unknown_item:
        index.check(pd.DataFrame({"user_id": ["u1"], "item_id": ["zzz"]}))
    message = str(unknown_item.value)
    assert message.startswith("item_id 'zzz' is unknown") and "user" not in message
    assert "send an item_id that the training data rates" in message


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
