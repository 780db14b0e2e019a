"""The registry watch without a server: its status through a registry that goes away and comes
back (a scripted probe and clock), its log lines and gauges, and MLflow's real request against
a stand-in tracking server on loopback."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

from mlaas.serving import registry_watch
from mlaas.serving.processes import free_port
from mlaas.serving.registry_watch import (
    LOG,
    RegistryGauges,
    RegistryStatus,
    RegistryWatcher,
    mlflow_probe,
)

URI = "http://registry.example:5000"
SECRET = "s3cret-Pa55"
REFUSED = ConnectionError(
    f"API request to http://mlaas:{SECRET}@registry.example:5000/api/2.0/mlflow/registered-models"
    "/alias failed with exception HTTPConnectionPool(host='registry.example', port=5000): Max "
    "retries exceeded (Caused by NewConnectionError(': Failed to establish a new connection: "
    "[Errno 111] Connection refused'))"
)


class Scripted:
    """A probe that answers from a script: a version, None, or an error to raise."""

    def __init__(self, *answers: int | Exception | None) -> None:
        self.answers = list(answers)

    def __call__(self) -> int | None:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _watcher(*answers: int | Exception | None, uri: str = URI) -> RegistryWatcher:
    times = iter(float(t) for t in range(100, 1000, 10))  # each look 10 s after the last
    return RegistryWatcher(uri, "digits", probe=Scripted(*answers), clock=lambda: next(times))


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOG.name]


def test_before_the_first_look_reachability_is_unknown() -> None:
    status = _watcher().status
    assert status == RegistryStatus(tracking_uri=URI)
    assert status.reachable is None


def test_an_answer_is_reachable_with_the_champion_it_names() -> None:
    watcher = _watcher(3)
    status = watcher.poll()
    assert status == RegistryStatus(
        reachable=True, tracking_uri=URI, last_success=100.0, champion_version=3
    )
    assert watcher.status == status


def test_a_registry_without_the_alias_is_reachable_with_no_champion() -> None:
    status = _watcher(None).poll()
    assert (status.reachable, status.champion_version, status.error) == (True, None, None)


def test_a_registry_that_stops_answering_sets_since_and_error_and_keeps_the_last_answer() -> None:
    watcher = _watcher(3, REFUSED, REFUSED)
    watcher.poll()
    first_failure = watcher.poll()
    second_failure = watcher.poll()

    assert first_failure.reachable is False
    assert first_failure.since == 110.0  # the first failed look of the spell
    assert first_failure.error == "ConnectionError: connection refused"
    assert (first_failure.last_success, first_failure.champion_version) == (100.0, 3)
    assert second_failure.since == 110.0  # the spell goes on: it started at the first failure
    assert second_failure.reachable is False


def test_a_registry_that_never_answered_is_unreachable_since_the_first_look() -> None:
    status = _watcher(RuntimeError("boom")).poll()
    assert (status.reachable, status.since, status.last_success) == (False, 100.0, None)
    assert status.error == "RuntimeError: boom"


def test_a_registry_that_answers_again_clears_since_and_error() -> None:
    watcher = _watcher(3, REFUSED, REFUSED, 4)
    for _ in range(3):
        watcher.poll()
    back = watcher.poll()
    assert back == RegistryStatus(
        reachable=True, tracking_uri=URI, last_success=130.0, champion_version=4
    )


def test_each_change_of_reachability_is_one_log_line_not_each_look(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    watcher = _watcher(3, 3, REFUSED, REFUSED, REFUSED, 3, 3, RuntimeError("boom"))
    for _ in range(8):
        watcher.poll()

    lines = _lines(caplog)
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO, logging.WARNING]
    away, back, again = (message for _, message in lines)
    assert f"registry at {URI} does not answer (ConnectionError: connection refused)" in away
    assert "keeps serving" in away
    assert f"registry at {URI} answers again (away for about 30 s)" in back
    assert "RuntimeError: boom" in again


def test_credentials_are_never_shown_in_the_uri_nor_in_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    leaky = ValueError(f"cannot parse the answer of https://mlaas:{SECRET}@registry.example/x")
    watcher = _watcher(REFUSED, leaky, uri=f"https://mlaas:{SECRET}@registry.example:5000/prefix")
    refused, unparsed = watcher.poll(), watcher.poll()

    assert refused.tracking_uri == "https://registry.example:5000/prefix"
    assert unparsed.error == "ValueError: cannot parse the answer of https://registry.example/x"
    shown = [refused.model_dump_json(), unparsed.model_dump_json(), *map(str, _lines(caplog))]
    assert not [text for text in shown if SECRET in text or "mlaas:" in text]


def test_postgresql_credentials_are_stripped_too() -> None:
    watcher = _watcher(uri=f"postgresql://mlflow:{SECRET}@db:5432/mlflow")
    assert watcher.status.tracking_uri == "postgresql://db:5432/mlflow"


def test_a_started_watcher_looks_at_once_not_after_its_interval() -> None:
    looked = threading.Event()

    def probe() -> int:
        looked.set()
        return 2

    watcher = RegistryWatcher(URI, "digits", probe=probe)
    watcher.start(3600)  # an hour: only the look at start can have happened
    try:
        assert looked.wait(timeout=30)
    finally:
        watcher.stop()


def test_a_watcher_with_interval_zero_never_looks() -> None:
    watcher = RegistryWatcher(URI, "digits", probe=Scripted())  # any look would fail: empty
    watcher.start(0)
    assert watcher.status.reachable is None


def test_without_mlflow_installed_the_status_says_the_registry_is_not_watched(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_mlflow(*_: Any) -> Any:
        raise ImportError("No module named 'mlflow'")

    monkeypatch.setattr(registry_watch, "mlflow_probe", no_mlflow)
    watcher = RegistryWatcher(URI, "digits")
    watcher.start(10)
    assert watcher.status.reachable is None
    assert (
        watcher.status.error
        == "not watched: MLflow is not installed here (No module named 'mlflow')"
    )
    assert [message for _, message in _lines(caplog)] == [f"registry: {watcher.status.error}"]


def test_the_gauges_show_reachability_last_success_and_champion_by_model() -> None:
    metrics = CollectorRegistry()
    gauges = RegistryGauges("digits", registry=metrics)
    watcher = RegistryWatcher(URI, "digits", probe=Scripted(5, REFUSED), on_status=gauges.show)

    def sample(name: str) -> float | None:
        return metrics.get_sample_value(name, {"model": "digits"})

    gauges.show(watcher.status)  # unknown yet: nothing is claimed
    assert sample("mlaas_registry_reachable") is None
    watcher.poll()
    answered_at = watcher.status.last_success
    assert sample("mlaas_registry_reachable") == 1
    assert sample("mlaas_registry_champion_version") == 5
    watcher.poll()
    assert sample("mlaas_registry_reachable") == 0
    assert sample("mlaas_registry_last_success_timestamp_seconds") == answered_at
    assert sample("mlaas_registry_champion_version") == 5  # as last read


# MLflow's real request (`http_request`, no retries) against a stand-in tracking server.


class Registry(BaseHTTPRequestHandler):
    """Answers the alias endpoint as an MLflow server does, for the scripted status."""

    answers: ClassVar[list[tuple[int, dict[str, Any]]]] = []
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        Registry.seen.append((self.path, self.headers.get("Authorization")))
        status, body = Registry.answers.pop(0)
        content = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    Registry.answers.clear()
    Registry.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_real_probe_reads_the_alias_with_mlflows_credentials(
    stand_in: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mlaas")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    Registry.answers[:] = [
        (200, {"model_version": {"name": "digits", "version": "7", "aliases": ["champion"]}}),
        (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no model digits"}),
        (400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "alias champion not found"}),
    ]
    probe = mlflow_probe(stand_in, "digits", "champion")

    assert [probe(), probe(), probe()] == [7, None, None]
    path, authorization = Registry.seen[0]
    assert path == "/api/2.0/mlflow/registered-models/alias?name=digits&alias=champion"
    assert authorization is not None and authorization.startswith("Basic ")


def test_a_server_that_refuses_or_fails_is_unreachable_with_its_answer(stand_in: str) -> None:
    Registry.answers[:] = [
        (401, {"error_code": "UNAUTHENTICATED", "message": "you must log in"}),
        (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "database is down"}),
    ]
    watcher = RegistryWatcher(stand_in, "digits", probe=mlflow_probe(stand_in, "digits", "x"))

    refused, failing = watcher.poll(), watcher.poll()
    assert refused.reachable is False and failing.reachable is False
    assert refused.error is not None and "answers 401" in refused.error
    assert failing.error is not None and "answers 503" in failing.error
    assert len(Registry.seen) == 2  # one request a look: a 503 is not retried


def test_a_server_that_is_down_is_unreachable_at_once_without_credentials_shown() -> None:
    uri = f"http://mlaas:{SECRET}@127.0.0.1:{free_port()}"  # nothing listens there
    watcher = RegistryWatcher(uri, "digits", probe=mlflow_probe(uri, "digits", "champion"))
    status = watcher.poll()
    assert status.reachable is False
    assert status.error is not None and "connection refused" in status.error
    assert SECRET not in status.model_dump_json()


def test_a_missing_sqlite_store_is_unreachable_and_not_created(tmp_path: Path) -> None:
    database = tmp_path / "no-store" / "mlflow.db"
    uri = f"sqlite:///{database}"
    watcher = RegistryWatcher(uri, "digits", probe=mlflow_probe(uri, "digits", "champion"))
    status = watcher.poll()
    assert status.reachable is False
    assert status.error == f"FileNotFoundError: no MLflow database at {database}"
    assert not database.parent.exists()
