"""The tracking server probe: one request, no retries, and a message per way it can fail that
names the server (without its password) and says what to do."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlaas.core.errors import TrackingStoreUnavailable
from mlaas.stores.tracking_server import _body, probe_tracking_server, refusal_of
from mlaas.stores.workspace import Workspace

SERVER = "http://127.0.0.1:5000"


def _credentials(username: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(username=username, token=None)


def test_a_server_that_does_not_answer_is_named_with_what_to_do() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(TrackingStoreUnavailable) as refused:
            probe_tracking_server(f"http://127.0.0.1:{port}", timeout=5)
    message = str(refused.value)
    assert f"server at http://127.0.0.1:{port} does not answer (connection refused)" in message
    assert "mlaas up --team" in message and "Nothing was run" in message


def test_missing_and_wrong_credentials_are_told_apart() -> None:
    missing = refusal_of(SERVER, 401, "", _credentials())
    wrong = refusal_of(SERVER, 401, "", _credentials("admin"))
    assert missing is not None and "none were given" in missing
    assert wrong is not None and "refused the credentials of user 'admin'" in wrong
    assert all("MLFLOW_TRACKING_PASSWORD" in text for text in (missing, wrong))


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (403, "ask its administrator"),
        (404, "root URL"),
        (500, "PostgreSQL"),
        (503, "PostgreSQL"),
        (418, "answers 418"),
    ],
)
def test_each_refusal_says_what_to_do(status: int, said: str) -> None:
    message = refusal_of(SERVER, status, "body", _credentials("admin"))
    assert message is not None and said in message and SERVER in message


def test_a_success_is_no_refusal() -> None:
    assert refusal_of(SERVER, 200, "{}", _credentials("admin")) is None


def test_a_password_in_a_quoted_url_is_masked_and_the_text_kept_short() -> None:
    body = "could not connect: postgresql+psycopg://mlaas:s3cr%2Ft@127.0.0.1:5433/mlflow " * 20
    shown = _body(SimpleNamespace(text=body))
    assert "s3cr" not in shown and "mlaas:***@127.0.0.1" in shown
    assert len(shown) <= 300


def test_a_mid_run_failure_names_the_request_the_status_and_what_to_do(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from mlaas.stores.registry import store_error

    workspace = Workspace(tmp_path, SERVER)
    cause = MlflowException(
        f"API request to {SERVER}/api/2.0/mlflow/runs/create failed with exception "
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded with url: "
        "/api/2.0/mlflow/runs/create (Caused by ResponseError('too many 503 error responses'))"
    )
    message = str(store_error(workspace, "failed during the train stage", cause))
    assert message.startswith(f"MLflow tracking store at {SERVER} failed during the train stage")
    assert "it answered 503 to /api/2.0/mlflow/runs/create" in message
    assert "HTTPConnectionPool" not in message and "mlaas up --team" in message
