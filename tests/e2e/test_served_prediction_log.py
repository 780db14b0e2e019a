"""What each model server records of what it answers, and the feedback clients send on it
(issue 12: "prediction log", "inputs outside what the model learned"), on the session's real
servers of every family."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlaas.core.settings import Settings
from mlaas.stores.prediction_log import read_feedback, read_predictions
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow


def _post(url: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=30)


def _logged(folder: Path, request_id: str, count: int = 1) -> list[Any]:
    """The log records of one request, once the background writer has written them."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [r for r in read_predictions(folder) if r.request_id == request_id]
        if len(found) >= count:
            return sorted(found, key=lambda record: record.index)
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} was not logged in {folder} within 30 s")


def _cancer_row(base: str) -> dict[str, float]:
    spec = httpx.get(f"{base}/docs.json", timeout=10).json()
    return dict.fromkeys(spec["components"]["schemas"]["TabularInstance"]["properties"], 1.0)


def test_every_answer_names_its_request_and_is_logged_with_the_monitors_features(
    family_servers: dict[str, str], session_workspace: Workspace
) -> None:
    base = family_servers["cancer"]
    row = _cancer_row(base)
    answer = _post(f"{base}/predict", {"instances": [row, row]}, **{"X-Request-ID": "order-7"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["request_id"] == "order-7" == answer.headers["X-Request-ID"]
    records = _logged(session_workspace.pipeline("cancer").predictions_dir, "order-7", 2)
    assert [r.index for r in records] == [0, 1]
    first = records[0]
    assert first.model_version >= 1 and first.latency_ms > 0
    assert first.prediction["label"] in ("benign", "malignant")
    assert first.features["mean radius"] == 1.0 and "ood_score" in first.features
    assert first.input is None  # raw instances only with monitor.log_inputs

    fresh = _post(f"{base}/predict", {"instances": [row]}, **{"X-Request-ID": "not an id!"})
    assert fresh.json()["request_id"] != "not an id!"  # replaced by one of the server's own


def test_texts_and_images_are_logged_as_summaries_not_as_what_was_sent(
    family_servers: dict[str, str], session_workspace: Workspace, tiny_settings: Settings
) -> None:
    text = "Shares in the bank fell after profits"
    answer = _post(f"{family_servers['news']}/predict", {"instances": [text]}).json()
    (record,) = _logged(session_workspace.pipeline("news").predictions_dir, answer["request_id"])
    assert record.features["text_words"] == 7.0 and record.features["text_chars"] == len(text)
    assert 0.0 <= record.features["unknown_word_share"] <= 1.0  # type: ignore[operator]
    assert record.embedding is not None and len(record.embedding) == 16
    assert text not in record.model_dump_json()

    blank = [[0.0] * 8 for _ in range(8)]
    answer = _post(f"{family_servers['digits']}/predict", {"instances": [blank]}).json()
    digits = session_workspace.pipeline(tiny_settings.pipeline.name).predictions_dir
    (record,) = _logged(digits, answer["request_id"])
    assert record.features["intensity_max"] == 0.0 and record.input is None
    # A blank image is valid input, but unlike any digit: the answer says so.
    assert any("out of distribution" in w for w in answer["predictions"][0]["warnings"])


def test_out_of_contract_values_are_named_in_the_answer_and_counted(
    family_servers: dict[str, str],
) -> None:
    base = family_servers["cancer"]
    row = _cancer_row(base) | {"mean radius": 10_000.0}
    answer = _post(f"{base}/predict", {"instances": [row]})
    assert answer.status_code == 200, answer.text
    (warning, *_) = answer.json()["predictions"][0]["warnings"]
    assert warning.startswith("mean radius: 10000 is outside the training range [")
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert 'mlaas_flagged_instances_total{reason="out_of_contract"}' in metrics


def test_feedback_is_recorded_for_answered_requests_only_and_checked(
    family_servers: dict[str, str], session_workspace: Workspace
) -> None:
    base = family_servers["cancer"]
    answer = _post(f"{base}/predict", {"instances": [_cancer_row(base)] * 2}).json()
    request_id = answer["request_id"]
    good = _post(f"{base}/feedback", {"request_id": request_id, "index": 1, "label": "benign"})
    assert good.status_code == 202 and good.json() == {"recorded": 1}, good.text

    unknown = _post(f"{base}/feedback", {"request_id": "never-sent", "label": "benign"})
    assert unknown.status_code == 404 and "request_id" in unknown.text
    past_the_end = {"request_id": request_id, "index": 2, "label": "benign"}
    assert _post(f"{base}/feedback", past_the_end).status_code == 404
    wrong_type = _post(f"{base}/feedback", {"request_id": request_id, "label": 1})
    assert wrong_type.status_code == 400 and "label" in wrong_type.text
    assert "'benign'" in wrong_type.text  # the classes it may be

    folder = session_workspace.pipeline("cancer").feedback_dir
    before = read_feedback(folder)
    batch = {
        "feedback": [
            {"request_id": request_id, "index": 0, "label": "malignant"},
            {"request_id": request_id, "index": 1, "label": "no such class"},
        ]
    }
    refused = _post(f"{base}/feedback", batch)
    assert refused.status_code == 400 and "feedback[1].label" in refused.text
    assert read_feedback(folder) == before  # all of a batch, or none of it
    assert read_feedback(folder)[(request_id, 1)].label == "benign"
