"""A recommender trained by the real stages on a tiny ratings file, served by `bentoml serve`:
/recommend never lists what a user rated in any split, each item's fields keep one meaning each,
and an unknown id at /predict is named with its own field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.conftest import served, shrink, write_params

from mlaas.core.records import SplitInfo
from mlaas.core.settings import Settings
from mlaas.stages.table import STAGES, run_stage
from mlaas.stores.files import read_table
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
ITEMS = [f"film{i}" for i in range(15)]
SOLO_USERS = [f"solo{u}" for u in range(20)]
"""Users with one rating each: those it lands in the validation or test split are unknown to
the model, though the data set knows what they rated."""


def _ratings() -> pd.DataFrame:
    """Two tastes: a user rates the films of their own group high, the others low."""
    rng = np.random.default_rng(9)
    rows = []
    for user in range(40):
        for item in rng.choice(len(ITEMS), size=8, replace=False):
            liked = user % 2 == item % 2
            rows.append((f"fan{user}", ITEMS[item], 5.0 if liked else 1.0 + rng.integers(0, 2)))
    rows += [(user, ITEMS[i % len(ITEMS)], 4.0) for i, user in enumerate(SOLO_USERS)]
    return pd.DataFrame(rows, columns=["who", "what", "stars"])


@pytest.fixture(scope="module")
def recommender(
    project_settings: Settings,
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("recommend-fixes")
    ratings = _ratings()
    ratings.to_csv(folder / "stars.csv", index=False)
    settings = shrink(
        project_settings,
        "rated-anywhere",
        pipeline={"family": "recommendation"},
        load={
            "source": None,
            "path": str(folder / "stars.csv"),
            "user_column": "who",
            "item_column": "what",
            "target": "stars",
        },
        validate={"min_rows": 20},
        split={"test_size": 0.2, "val_size": 0.2},
        train={
            "max_epochs": 4,
            "batch_size": 32,
            "learning_rate": 0.01,
            "model": {"name": "matrix_factorization", "factors": 4},
        },
    )
    records = {stage: run_stage(stage, settings, session_workspace) for stage in STAGES}
    splits = records["split"]
    assert isinstance(splits, SplitInfo)
    train = read_table(splits.train.path, "split").to_pandas()
    with served(write_params(settings, folder), session_workspace, folder / "server.log") as url:
        yield {"url": url, "ratings": ratings, "train": train}


def _recommend(url: str, user: str, k: int = len(ITEMS)) -> dict[str, Any]:
    answer = httpx.post(f"{url}/recommend", json={"user_id": user, "k": k}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_no_user_is_recommended_an_item_they_rated_in_any_split(
    recommender: dict[str, Any],
) -> None:
    rated = recommender["ratings"].groupby("who")["what"].agg(set)
    trained_on = set(recommender["train"]["user_id"])
    held_out_only = [user for user in SOLO_USERS if user not in trained_on]
    assert held_out_only, "the seed put every one-rating user in the training split"
    for user, items in rated.items():
        answer = _recommend(recommender["url"], user)
        listed = {item["item_id"] for item in answer["items"]}
        assert not listed & items, (user, sorted(listed & items))
        assert answer["fallback"] == (None if user in trained_on else "popularity")
        assert listed, user  # every user has films left to discover


def test_predicted_ratings_and_rating_counts_have_fields_of_their_own(
    recommender: dict[str, Any],
) -> None:
    url = recommender["url"]
    training_counts = recommender["train"]["item_id"].value_counts().to_dict()
    personal = _recommend(url, "fan0", k=5)
    popular = _recommend(url, "someone-new", k=5)
    for answer in (personal, popular):
        for item in answer["items"]:
            assert set(item) == {"item_id", "predicted_rating", "rating_count"}
            assert 1.0 <= item["predicted_rating"] <= 5.0
            assert item["rating_count"] == training_counts[item["item_id"]]
    ratings = [item["predicted_rating"] for item in personal["items"]]
    assert personal["fallback"] is None and ratings == sorted(ratings, reverse=True)
    counts = [item["rating_count"] for item in popular["items"]]
    assert popular["fallback"] == "popularity" and counts == sorted(counts, reverse=True)
    assert counts[0] == max(training_counts.values())

    schemas = httpx.get(f"{url}/docs.json", timeout=10).json()["components"]["schemas"]
    item_schema = schemas["RecommendedItem"]["properties"]
    assert set(item_schema) == {"item_id", "predicted_rating", "rating_count"}
    assert "rating range" in item_schema["predicted_rating"]["description"]
    assert "training data" in item_schema["rating_count"]["description"]
    fallback = schemas["RecommendResponse"]["properties"]["fallback"]
    assert fallback["nullable"] is True and "popularity" in fallback["description"]


def test_an_unknown_item_or_user_at_predict_is_named_as_what_it_is(
    recommender: dict[str, Any],
) -> None:
    url = recommender["url"]
    known = recommender["train"].iloc[0]

    def refused(user: str, item: str) -> str:
        body = {"instances": [{"user_id": user, "item_id": item}]}
        answer = httpx.post(f"{url}/predict", json=body, timeout=30)
        assert answer.status_code == 400, answer.text
        return str(answer.json()["error"])

    item_error = refused(known["user_id"], "no-such-film")
    assert "item_id 'no-such-film' is unknown" in item_error and "user" not in item_error
    assert "send an item_id that the training data rates" in item_error
    user_error = refused("nobody", known["item_id"])
    assert "user_id 'nobody' is unknown" in user_error and "/recommend" in user_error
