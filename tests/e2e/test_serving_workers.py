"""`serve.workers` / `mlaas serve --workers N`: N BentoML worker processes on one port, each
answering and logging what it answers; and the per-server switches (`--no-prediction-log`)
reach every worker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.conftest import shrink, write_params

from mlaas.core.settings import Settings
from mlaas.serving.processes import server_process
from mlaas.stores.prediction_log import PREDICTION_FILES
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
NAME = "served-by-workers"


@pytest.fixture(scope="module")
def params(
    prefect_server: None, project_settings: Settings, session_workspace: Workspace
) -> Iterator[Path]:
    """A breast_cancer logistic regression trained and packaged (seconds, no network)."""
    from flows.training_pipeline import training_pipeline

    settings = shrink(
        project_settings,
        NAME,
        pipeline={"family": "tabular"},
        load={"source": "breast_cancer"},
        train={"model": {"name": "logistic_regression"}},
    )
    path = write_params(settings, session_workspace.home)
    training_pipeline(params=str(path), home=str(session_workspace.home))
    yield path


def _row() -> dict[str, float]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return dict(zip(data.feature_names.tolist(), data.data[0].tolist(), strict=True))


def _predict_many(base: str, count: int) -> list[int]:
    body = json.dumps({"instances": [_row()]})

    def one(_: int) -> int:
        return httpx.post(
            f"{base}/predict",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(count)))


def _workers(server_pid: int) -> list[psutil.Process]:
    return [
        process
        for process in psutil.Process(server_pid).children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(process.cmdline())
    ]


def _writers(folder: Path, pids: set[int], deadline: float) -> set[int]:
    """The PIDs among `pids` whose prediction log files hold a record, once each has one (or
    the deadline passes): the log's thread writes a moment after the answer."""
    while True:
        writers = {
            int(path.name.split("-")[2])
            for path in folder.glob(PREDICTION_FILES)
            if path.stat().st_size > 0
        } & pids
        if writers == pids or time.monotonic() > deadline:
            return writers
        time.sleep(0.2)


def test_two_workers_share_the_port_and_each_answers_and_logs(
    params: Path, session_workspace: Workspace, tmp_path: Path
) -> None:
    folder = session_workspace.pipeline(NAME).predictions_dir
    with server_process(
        params, session_workspace, tmp_path / "two.log", "--workers", "2"
    ) as server:
        workers = _workers(server.process.pid)
        assert len(workers) == 2, [w.cmdline() for w in workers]
        statuses = _predict_many(server.url, 400)
        assert statuses == [200] * 400
        pids = {worker.pid for worker in workers}
        # Both answered: the kernel spread the connections over the two processes' accepts.
        assert _writers(folder, pids, time.monotonic() + 30) == pids
    assert "(2 worker(s))" in (tmp_path / "two.log").read_text()


def test_no_prediction_log_reaches_every_worker(
    params: Path, session_workspace: Workspace, tmp_path: Path
) -> None:
    folder = session_workspace.pipeline(NAME).predictions_dir
    with server_process(
        params, session_workspace, tmp_path / "quiet.log", "--no-prediction-log"
    ) as server:
        (worker,) = _workers(server.process.pid)
        assert _predict_many(server.url, 50) == [200] * 50
        time.sleep(3)  # longer than the log's thread takes to write what it was given
        assert _writers(folder, {worker.pid}, time.monotonic()) == set()


@pytest.mark.parametrize("workers", ["0", "65"])
def test_a_worker_count_out_of_range_is_a_clear_error(
    params: Path, workers: str, session_workspace: Workspace
) -> None:
    import subprocess
    import sys

    count = ("--workers", workers)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlaas"), "serve", "--params", str(params), *count],
        capture_output=True,
        text=True,
        timeout=120,
        env=_environment(session_workspace),
    )
    assert done.returncode == 2
    assert f"--workers {workers}: give 1 to 64 processes" in done.stderr


def _environment(workspace: Workspace) -> dict[str, Any]:
    import os

    return {**os.environ, "MLAAS_HOME": str(workspace.home)}


def test_the_bentos_dockerfile_installs_the_lock_exposes_the_port_and_runs_as_non_root(
    params: Path,
) -> None:
    """`bentoml containerize` builds from this Dockerfile where an OCI builder exists (none
    here): what it would build is checked as generated."""
    import re

    import bentoml
    from tests.conftest import PROJECT_ROOT

    folder = Path(bentoml.bentos.get(f"{NAME}:latest").path)
    dockerfile = (folder / "env" / "docker" / "Dockerfile").read_text()

    def requirements(path: Path) -> set[str]:
        lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
        return {line for line in lines if line}

    installed = requirements(folder / "env" / "python" / "requirements.txt")
    locked = requirements(PROJECT_ROOT / "src" / "serving-requirements.txt")
    assert installed == locked and all("==" in line for line in installed)
    assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile
    assert re.search(r"^EXPOSE 3000$", dockerfile, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), users
    assert re.search(r"^ENTRYPOINT ", dockerfile, re.MULTILINE)
