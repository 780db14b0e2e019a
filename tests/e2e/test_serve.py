"""`mlaas serve` (bentoml serve) as a real process on a free loopback port, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import Running

from mlaas.core.settings import ServeSettings
from mlaas.core.tasks import task_of
from mlaas.families.image import table_images
from mlaas.modeling.models import load_model
from mlaas.stores.files import read_table
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(digits_server: Running) -> str:
    return digits_server.url


@pytest.fixture(scope="module")
def test_images(pipeline_run: dict[str, Any], session_workspace: Workspace) -> np.ndarray:
    paths = session_workspace.pipeline(pipeline_run["settings"].pipeline.name)
    return table_images(read_table(paths.split("test"), "split"))[:5, :, :, 0]


def _post(base: str, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(
        f"{base}{path}", content=content, headers={"content-type": "application/json"}, timeout=60
    )


def _predict(base: str, body: Any) -> httpx.Response:
    return _post(base, "/predict", body)


def test_predict_answers_like_the_model_in_process(
    server: str, test_images: np.ndarray, pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    response = _predict(server, {"instances": test_images.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "digits-test", "version": 1, "alias": "champion"}
    assert len(body["predictions"]) == len(test_images)

    paths = session_workspace.pipeline(pipeline_run["settings"].pipeline.name)
    model = load_model(paths.model_dir)
    expected = task_of(model.card).describe(model.predict(test_images), model.card)
    for answer, local in zip(body["predictions"], expected, strict=True):
        assert answer["label"] == local["label"]
        assert set(answer["probabilities"]) == {str(label) for label in range(10)}
        for key, value in local["probabilities"].items():
            assert answer["probabilities"][key] == pytest.approx(value, abs=1e-5)


def _answered_arrays(server: str) -> float:
    for line in httpx.get(f"{server}/metrics", timeout=10).text.splitlines():
        if line.startswith("mlaas_array_requests_total"):
            return float(line.split()[-1])
    return 0.0


def test_an_array_body_and_the_same_images_encoded_get_the_same_answer(
    server: str, test_images: np.ndarray
) -> None:
    # Arrays of numbers are read past BentoML's route (mlaas.serving.lean_route); encoded
    # images go through it: both must answer alike, and the metric tells which way each went.
    import base64
    import io

    from PIL import Image

    pixels = test_images.round().clip(0, 255)
    encoded = []
    for image in pixels.astype(np.uint8):
        buffer = io.BytesIO()
        Image.fromarray(image, mode="L").save(buffer, format="PNG")
        encoded.append({"b64": base64.b64encode(buffer.getvalue()).decode()})
    before = _answered_arrays(server)
    as_arrays = _predict(server, {"instances": pixels.tolist()})
    assert _answered_arrays(server) == before + 1
    as_files = _predict(server, {"instances": encoded})
    assert _answered_arrays(server) == before + 1
    assert as_arrays.status_code == as_files.status_code == 200, (as_arrays.text, as_files.text)
    assert as_arrays.headers["x-request-id"] == as_arrays.json()["request_id"]
    first, second = as_arrays.json(), as_files.json()
    assert first.keys() == second.keys() and first["model"] == second["model"]
    for one, other in zip(first["predictions"], second["predictions"], strict=True):
        assert one.keys() == other.keys()
        assert one["label"] == other["label"] and one["warnings"] == other["warnings"]
        assert one["probabilities"] == pytest.approx(other["probabilities"], abs=1e-6)
    # A client's own request id is kept on both routes.
    mine = httpx.post(
        f"{server}/predict",
        content=json.dumps({"instances": pixels[:1].tolist()}),
        headers={"content-type": "application/json", "X-Request-ID": "client-7"},
        timeout=60,
    )
    assert mine.json()["request_id"] == mine.headers["x-request-id"] == "client-7"


def test_model_describes_the_served_version(server: str) -> None:
    body = httpx.get(f"{server}/model", timeout=10).json()
    assert (body["name"], body["version"], body["alias"]) == ("digits-test", 1, "champion")
    assert 0.0 <= body["metrics"]["test_accuracy"] <= 1.0
    assert body["tags"]["mlaas.dataset"] == "digits"
    assert body["manifest"]["promotion"]["promoted"] is True


def test_health_metrics_and_openapi_pages(server: str) -> None:
    for path in ("/healthz", "/readyz", "/livez", "/metrics", "/"):
        assert httpx.get(f"{server}{path}", timeout=10).status_code == 200, path
    assert "bentoml_" in httpx.get(f"{server}/metrics", timeout=10).text
    spec = httpx.get(f"{server}/docs.json", timeout=10).json()
    assert "/predict" in spec["paths"] and "/model" in spec["paths"]


def _image(value: Any = 0.0, rows: int = 8, cols: int = 8) -> list[list[Any]]:
    return [[value] * cols for _ in range(rows)]


BAD_REQUESTS = {
    "malformed-json": ('{"instances": [[[0, 1]', "json"),
    "not-an-object": ("[1, 2, 3]", "should be an object"),
    "missing-instances": ({}, "instances"),
    "instances-not-a-list": ({"instances": "digits"}, "instances"),
    "empty-batch": ({"instances": []}, "at least 1"),
    "oversized-batch": ({"instances": [_image()] * 257}, "at most 256"),
    "wrong-height": ({"instances": [_image(rows=7)]}, "instances"),
    "wrong-width": ({"instances": [_image(cols=9)]}, "instances"),
    "flat-instance": ({"instances": [[0.0] * 64]}, "instances"),
    "string-pixel": ({"instances": [_image("12")]}, "valid number"),
    "out-of-range": ({"instances": [_image(256)]}, "less than or equal to 255"),
    "negative": ({"instances": [_image(-1)]}, "greater than or equal to 0"),
    "nan": ('{"instances": [' + json.dumps(_image()).replace("0.0", "NaN", 1) + "]}", "finite"),
    "infinity": (
        '{"instances": [' + json.dumps(_image()).replace("0.0", "Infinity", 1) + "]}",
        "finite",
    ),
    "unknown-field": ({"instances": [_image()], "threshold": 0.5}, "threshold"),
    "null-body": ("null", "should be an object"),
    "empty-body": ("", "instances"),
    "not-utf8": (b'{"instances": "\xff\xfe"}', "invalid json"),
    "null-pixel": ({"instances": [_image(None)]}, "valid number"),
    "bool-pixel": ({"instances": [_image(True)]}, "valid number"),
    "nested-too-deep": ('{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}", "recursion"),
    "huge-literal": ('{"instances": [[[' + ",".join(["1e999"] * 8) + "]]]}", "finite"),
    "huge-integer": ({"instances": [_image(10**400)]}, "finite"),
    "million-numbers": ({"instances": [0.0] * 1_000_000}, "at most 256"),
    # 16384 bad pixels: the message names the first few, not a 2 MB list of all of them.
    "many-bad-pixels": ({"instances": [_image("x")] * 256}, "more"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_that_names_the_problem(server: str, case: str) -> None:
    body, named = BAD_REQUESTS[case]
    response = _post(server, "/predict", body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]  # the shape the OpenAPI page documents for errors
    assert named.lower() in error.lower(), error[:500]
    assert len(response.content) < 10_000


def test_bodies_over_the_limit_get_413_before_parsing(server: str) -> None:
    limit = ServeSettings().max_request_bytes
    oversized = b'{"instances": [' + b" " * limit + b"]}"
    refused = _post(server, "/predict", oversized)
    assert refused.status_code == 413 and str(limit) in refused.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server has to count
        yield b'{"instances": ['
        for _ in range(limit // 65536 + 1):
            yield b" " * 65536
        yield b"]}"

    chunked = httpx.post(
        f"{server}/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413, chunked.text[:300]


@pytest.mark.parametrize(
    "media_type", ["text/plain", "multipart/form-data; boundary=x", "application/octet-stream"]
)
def test_bodies_that_are_not_json_get_415(server: str, media_type: str) -> None:
    body = json.dumps({"instances": [_image()]})
    refused = httpx.post(f"{server}/predict", content=body, headers={"content-type": media_type})
    assert refused.status_code == 415 and "application/json" in refused.json()["error"]


def test_the_server_keeps_serving_after_bad_input(server: str) -> None:
    for body, _ in BAD_REQUESTS.values():
        _predict(server, body)
    response = _predict(server, {"instances": [_image(255.0)]})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1
