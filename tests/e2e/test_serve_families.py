"""Several pipelines served at once, one server each: a tabular classifier, a text classifier
and a recommender, each with the endpoint schema its model card dictates."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from tests.conftest import FAMILY_PIPELINES

pytestmark = pytest.mark.slow


def _post(url: str, body: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def test_each_server_describes_its_own_model(family_servers: dict[str, str]) -> None:
    for name, sections in FAMILY_PIPELINES.items():
        model = httpx.get(f"{family_servers[name]}/model", timeout=10).json()
        assert (model["name"], model["alias"]) == (name, "champion")
        assert model["family"] == sections["pipeline"]["family"]


def test_tabular_rows_by_feature_name(family_servers: dict[str, str]) -> None:
    base = family_servers["cancer"]
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


def test_text_instances_are_strings(family_servers: dict[str, str]) -> None:
    base = family_servers["news"]
    answer = _post(f"{base}/predict", {"instances": ["Shares in the bank fell after profits"]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] in (
        "business", "entertainment", "politics", "sports", "tech",
    )  # fmt: skip
    for bad in ("", "   ", 7, "x" * 30001):
        assert _post(f"{base}/predict", {"instances": [bad]}).status_code == 400


def test_ratings_and_recommendations(family_servers: dict[str, str]) -> None:
    base = family_servers["movies"]
    answer = _post(f"{base}/predict", {"instances": [{"user_id": "196", "item_id": "242"}]})
    assert answer.status_code == 200, answer.text
    assert 1.0 <= answer.json()["predictions"][0]["rating"] <= 5.0
    unknown = _post(f"{base}/predict", {"instances": [{"user_id": "nobody", "item_id": "242"}]})
    assert unknown.status_code == 400 and "user_id 'nobody' is unknown" in unknown.text

    top = _post(f"{base}/recommend", {"user_id": "196", "k": 5}).json()
    assert top["fallback"] is None and len(top["items"]) == 5
    scores = [item["predicted_rating"] for item in top["items"]]
    assert scores == sorted(scores, reverse=True)
    cold = _post(f"{base}/recommend", {"user_id": "someone-new", "k": 3}).json()
    assert cold["fallback"] == "popularity" and len(cold["items"]) == 3
    assert _post(f"{base}/recommend", {"user_id": "196", "k": 0}).status_code == 400


def _row(value: Any = 1.0) -> dict[str, Any]:
    """A breast_cancer row with every feature set to value (in the order the data set has)."""
    from sklearn.datasets import load_breast_cancer

    return dict.fromkeys(load_breast_cancer().feature_names.tolist(), value)


RATING = {"user_id": "196", "item_id": "242"}
# (pipeline, path, body, what the error names); bodies as str are sent as they are.
BAD_REQUESTS: dict[str, tuple[str, str, Any, str]] = {
    "cancer-malformed-json": ("cancer", "/predict", '{"instances": [{', "invalid json"),
    "cancer-empty-batch": ("cancer", "/predict", {"instances": []}, "at least 1"),
    "cancer-oversized-batch": ("cancer", "/predict", {"instances": [_row()] * 257}, "at most 256"),
    "cancer-row-not-an-object": ("cancer", "/predict", {"instances": [[1.0, 2.0]]}, "instances.0"),
    "cancer-missing-feature": (
        "cancer",
        "/predict",
        {"instances": [{k: v for k, v in _row().items() if k != "worst area"}]},
        "worst area",
    ),
    "cancer-unknown-feature": (
        "cancer",
        "/predict",
        {"instances": [_row() | {"colour": 1}]},
        "colour",
    ),
    "cancer-string-number": ("cancer", "/predict", {"instances": [_row("12")]}, "valid number"),
    "cancer-bool-number": ("cancer", "/predict", {"instances": [_row(True)]}, "valid number"),
    "cancer-nan": ("cancer", "/predict", '{"instances": [{"mean radius": NaN}]}', "finite"),
    "cancer-infinity": (
        "cancer",
        "/predict",
        '{"instances": [{"mean radius": -Infinity}]}',
        "finite",
    ),
    "cancer-huge-number": (
        "cancer",
        "/predict",
        {"instances": [_row(1.7e308)]},
        "less than or equal",
    ),
    "cancer-huge-integer": ("cancer", "/predict", {"instances": [_row(10**400)]}, "mean radius"),
    "cancer-unknown-field": ("cancer", "/predict", {"instances": [_row()], "x": 1}, "x"),
    "news-empty-text": ("news", "/predict", {"instances": [""]}, "at least 1 character"),
    "news-blank-text": ("news", "/predict", {"instances": ["   "]}, "pattern"),
    "news-number-not-text": ("news", "/predict", {"instances": [7]}, "valid string"),
    "news-list-not-text": ("news", "/predict", {"instances": [["a", "b"]]}, "valid string"),
    "news-too-long": ("news", "/predict", {"instances": ["x" * 30001]}, "at most 30000"),
    "news-empty-batch": ("news", "/predict", {"instances": []}, "at least 1"),
    "news-not-an-object": ("news", "/predict", '["text"]', "should be an object"),
    "movies-unknown-user": (
        "movies",
        "/predict",
        {"instances": [RATING | {"user_id": "nobody"}]},
        "user_id 'nobody' is unknown",
    ),
    "movies-unknown-item": (
        "movies",
        "/predict",
        {"instances": [RATING | {"item_id": "no-such-film"}]},
        "item_id 'no-such-film' is unknown",
    ),
    "movies-missing-item": ("movies", "/predict", {"instances": [{"user_id": "196"}]}, "item_id"),
    "movies-float-id": (
        "movies",
        "/predict",
        {"instances": [RATING | {"item_id": 3.5}]},
        "item_id",
    ),
    "movies-empty-id": ("movies", "/predict", {"instances": [RATING | {"user_id": ""}]}, "user_id"),
    "movies-huge-id": (
        "movies",
        "/predict",
        '{"instances": [{"user_id": ' + "9" * 5000 + ', "item_id": "242"}]}',
        "number out of range",
    ),
    "movies-unknown-field": ("movies", "/predict", {"instances": [RATING | {"when": 1}]}, "when"),
    "movies-recommend-k-zero": ("movies", "/recommend", {"user_id": "196", "k": 0}, "k"),
    "movies-recommend-k-too-big": ("movies", "/recommend", {"user_id": "196", "k": 257}, "k"),
    "movies-recommend-k-string": ("movies", "/recommend", {"user_id": "196", "k": "5"}, "k"),
    "movies-recommend-bool-user": ("movies", "/recommend", {"user_id": False}, "user_id"),
    "movies-recommend-no-user": ("movies", "/recommend", {"k": 5}, "user_id"),
    "movies-recommend-unknown-field": ("movies", "/recommend", {"user_id": "196", "n": 5}, "n"),
}


def _send(base: str, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"content-type": "application/json"}
    return httpx.post(f"{base}{path}", content=content, headers=headers, timeout=30)


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_that_names_the_problem(
    family_servers: dict[str, str], case: str
) -> None:
    pipeline, path, body, named = BAD_REQUESTS[case]
    response = _send(family_servers[pipeline], path, body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert named.lower() in error.lower(), error[:500]


def test_each_server_keeps_serving_after_bad_input(family_servers: dict[str, str]) -> None:
    for pipeline, path, body, _ in BAD_REQUESTS.values():
        _send(family_servers[pipeline], path, body)
    assert _post(f"{family_servers['news']}/predict", {"instances": ["a film"]}).status_code == 200
    assert _post(f"{family_servers['movies']}/predict", {"instances": [RATING]}).status_code == 200
    spec = httpx.get(f"{family_servers['cancer']}/docs.json", timeout=10).json()
    features = spec["components"]["schemas"]["TabularInstance"]["properties"]
    row = dict.fromkeys(features, 1.0)
    assert _post(f"{family_servers['cancer']}/predict", {"instances": [row]}).status_code == 200
