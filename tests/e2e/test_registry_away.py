"""A model server whose MLflow registry goes away: a real `mlflow server` over the session's
store, `mlaas serve` pointed at it, then the MLflow server killed. The model server says so in
/metrics and `GET /model`, stays ready and keeps answering.

The server looks every `serve.registry_poll_seconds` of its package (the default, 10 s: serve
settings are baked in when the pipeline is packaged, and the session's pipeline is shared), so
each change shows within one interval; the waits are bounded, never timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from mlaas.families.image import table_images
from mlaas.serving.processes import free_port, server_process
from mlaas.stores.files import read_table
from mlaas.stores.registry import MlflowRegistry
from mlaas.stores.tracking_server import WITHOUT_SERVER_JOBS
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow

WAIT_SECONDS = 120  # for what should take one poll interval, or an MLflow server's start


def _wait_for(condition: Callable[[], Any], what: str, log: Path) -> Any:
    """The first truthy value of `condition`, polled until WAIT_SECONDS have passed."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := condition()):
        assert time.monotonic() < deadline, (
            f"{what} within {WAIT_SECONDS} s; log:\n" + (log.read_text()[-3000:])
        )
        time.sleep(0.25)
    return value


@contextmanager
def mlflow_server(workspace: Workspace, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`mlflow server` over the workspace's store on loopback, in a process group of its own
    (its CLI starts uvicorn as a child); whatever is left of it is killed on exit."""
    command = [
        *(str(Path(sys.executable).parent / "mlflow"), "server"),
        *("--backend-store-uri", workspace.tracking_uri),
        *("--default-artifact-root", workspace.mlflow_artifacts.as_uri()),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=log.parent,
            env={**os.environ, **WITHOUT_SERVER_JOBS},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: the server gets no chance to say goodbye, as when its machine dies."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in children:  # one that left the group would keep the port open
        with suppress(psutil.Error):
            child.kill()
    process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _gauge(base: str, name: str, model: str) -> float | None:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = re.search(rf'^{name}\{{model="{re.escape(model)}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_a_server_whose_registry_goes_away_says_so_and_keeps_serving(
    pipeline_run: dict[str, Any], session_workspace: Workspace, tmp_path: Path
) -> None:
    name = pipeline_run["settings"].pipeline.name
    champion = MlflowRegistry(session_workspace).champion(name)
    assert champion is not None
    images = table_images(read_table(session_workspace.pipeline(name).split("test"), "split"))
    body = json.dumps({"instances": images[:2, :, :, 0].tolist()})
    port = free_port()
    registry_url = f"http://127.0.0.1:{port}"
    mlflow_log, serve_log = tmp_path / "mlflow.log", tmp_path / "serve.log"

    with mlflow_server(session_workspace, port, mlflow_log) as mlflow:
        _wait_for(lambda: _answers(f"{registry_url}/health"), "MLflow server up", mlflow_log)
        # The same state folder, with MLflow reached through its server (team mode's set-up).
        through_server = Workspace(session_workspace.home, store_uri=registry_url)
        with server_process(pipeline_run["params"], through_server, serve_log) as server:
            base = server.url

            def gauge(metric: str) -> float | None:
                return _gauge(base, metric, name)

            _wait_for(lambda: gauge("mlaas_registry_reachable") == 1, "reachable 1", serve_log)
            assert gauge("mlaas_registry_champion_version") == champion.version
            answered_at = gauge("mlaas_registry_last_success_timestamp_seconds")
            assert answered_at is not None and answered_at > 0
            seen = httpx.get(f"{base}/model", timeout=10).json()["registry"]
            assert seen["reachable"] is True and seen["tracking_uri"] == registry_url
            assert seen["champion_version"] == champion.version

            _kill(mlflow)
            assert not _answers(f"{registry_url}/health")

            _wait_for(lambda: gauge("mlaas_registry_reachable") == 0, "reachable 0", serve_log)
            away = httpx.get(f"{base}/model", timeout=10).json()
            registry = away["registry"]
            assert registry["reachable"] is False
            assert registry["tracking_uri"] == registry_url
            assert "connection refused" in registry["error"]
            assert registry["since"] is not None and registry["last_success"] is not None
            assert registry["since"] >= registry["last_success"]
            assert registry["champion_version"] == champion.version  # as last read
            # Still ready, still answering: the server needs no registry to serve what it has.
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
            predicted = httpx.post(
                f"{base}/predict",
                content=body,
                headers={"content-type": "application/json"},
                timeout=60,
            )
            assert predicted.status_code == 200, predicted.text
            assert len(predicted.json()["predictions"]) == 2
            warnings = [
                line
                for line in serve_log.read_text().splitlines()
                if f"registry at {registry_url} does not answer" in line
            ]
            assert len(warnings) == 1, warnings
