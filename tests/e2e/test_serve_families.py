"""Several pipelines served at once, one server each: a tabular classifier, a text classifier
and a recommender, each with the endpoint schema its model card dictates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from tests.conftest import served, shrink, write_params

from mlaas.settings import Settings
from mlaas.stages import STAGES, run_stage
from mlaas.workspace import Workspace

pytestmark = pytest.mark.slow
FAST = {"max_epochs": 4, "batch_size": 64, "learning_rate": 0.01}
PIPELINES = {
    "cancer": {
        "pipeline": {"family": "tabular"},
        "load": {"source": "breast_cancer"},
        "train": {"model": {"name": "logistic_regression"}},
    },
    "news": {
        "pipeline": {"family": "text"},
        "load": {"source": "bbc_news", "max_rows": 400, "max_text_chars": 30000},
        "train": {"model": {"name": "tfidf_linear", "hash_bits": 14}},
    },
    "movies": {
        "pipeline": {"family": "recommendation"},
        "load": {"source": "movielens_100k", "max_rows": 5000},
        "train": {**FAST, "model": {"name": "matrix_factorization", "factors": 8}},
    },
}


@pytest.fixture(scope="module")
def servers(
    project_settings: Settings,
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("families")
    params = {}
    for name, sections in PIPELINES.items():
        settings = shrink(project_settings, name, validate={"min_rows": 100}, **sections)
        for stage in STAGES:
            run_stage(stage, settings, session_workspace)
        params[name] = write_params(settings, folder)
    with ExitStack() as stack:
        yield {
            name: stack.enter_context(served(path, session_workspace, folder / f"{name}.log"))
            for name, path in params.items()
        }


def _post(url: str, body: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def test_each_server_describes_its_own_model(servers: dict[str, str]) -> None:
    for name, base in servers.items():
        model = httpx.get(f"{base}/model", timeout=10).json()
        assert (model["name"], model["alias"]) == (name, "champion")
        assert model["family"] == PIPELINES[name]["pipeline"]["family"]


def test_tabular_rows_by_feature_name(servers: dict[str, str]) -> None:
    base = servers["cancer"]
    spec = httpx.get(f"{base}/docs.json", timeout=10).json()
    features = spec["components"]["schemas"]["TabularInstance"]["properties"]
    assert "mean radius" in features and len(features) == 30
    row = dict.fromkeys(features, 1.0) | {"mean radius": None}  # a missing value is imputed
    answer = _post(f"{base}/predict", {"instances": [row]})
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["predictions"][0]
    assert prediction["label"] in ("malignant", "benign")
    assert set(prediction["probabilities"]) == {"benign", "malignant"}
    for bad, named in (
        ({k: v for k, v in row.items() if k != "worst area"}, "worst area"),
        (row | {"colour": 1.0}, "colour"),
        (row | {"mean texture": "12"}, "mean texture"),
    ):
        refused = _post(f"{base}/predict", {"instances": [bad]})
        assert refused.status_code == 400 and named in refused.text, refused.text


def test_text_instances_are_strings(servers: dict[str, str]) -> None:
    base = servers["news"]
    answer = _post(f"{base}/predict", {"instances": ["Shares in the bank fell after profits"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in (
        "business", "entertainment", "politics", "sports", "tech",
    )  # fmt: skip
    for bad in ("", "   ", 7, "x" * 30001):
        assert _post(f"{base}/predict", {"instances": [bad]}).status_code == 400


def test_ratings_and_recommendations(servers: dict[str, str]) -> None:
    base = servers["movies"]
    answer = _post(f"{base}/predict", {"instances": [{"user_id": "196", "item_id": "242"}]})
    assert answer.status_code == 200, answer.text
    assert 1.0 <= answer.json()["predictions"][0]["rating"] <= 5.0
    unknown = _post(f"{base}/predict", {"instances": [{"user_id": "nobody", "item_id": "242"}]})
    assert unknown.status_code == 400 and "user_id 'nobody' is unknown" in unknown.text

    top = _post(f"{base}/recommend", {"user_id": "196", "k": 5}).json()
    assert top["fallback"] is None and len(top["items"]) == 5
    scores = [item["score"] for item in top["items"]]
    assert scores == sorted(scores, reverse=True)
    cold = _post(f"{base}/recommend", {"user_id": "someone-new", "k": 3}).json()
    assert cold["fallback"] == "popularity" and len(cold["items"]) == 3
    assert _post(f"{base}/recommend", {"user_id": "196", "k": 0}).status_code == 400
