"""`mlaas up | status | down`: real Prefect and MLflow servers and the deployments' runner on
loopback; a scheduled run fires on its own and completes; each part is started once, restarted
when it dies, and stopped by the PID `up` recorded, leaving nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from tests.conftest import PROJECT_ROOT, shrink, write_params

from mlaas.core.settings import Settings
from mlaas.serving.processes import free_port

MLAAS = str(Path(sys.executable).parent / "mlaas")
PARTS = ("prefect", "mlflow", "deployments", "api")
SCHEDULED_EVERY_SECONDS = 10
# The first scheduled run is due a few seconds after the deployment is made, the runner looks
# every 10 s, and the tiny pipeline trains in well under a minute even on a busy machine.
FIRST_RUN_COMPLETES_WITHIN_SECONDS = 240


def _mlaas(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # The platform gets its own Prefect and MLflow homes, not the test session's.
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    return subprocess.run(
        [MLAAS, "--home", str(home), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _recorded_pid(home: Path, part: str) -> int:
    return int(json.loads((home / "run" / f"{part}.json").read_text())["pid"])


def _states(status_output: str) -> dict[str, str]:
    """The first table of `mlaas status`: part -> state (the pipelines' table follows it)."""
    parts_table = status_output.split("\n\n")[0]
    rows = [line.split() for line in parts_table.splitlines()[1:] if line.strip()]
    return {row[0]: row[1] for row in rows}


def _group_of(pid: int) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            # An exited process nobody has reaped yet (its parent died too) holds nothing.
            if os.getpgid(process.pid) == pid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def _completed_runs(prefect: str, deployment_id: str) -> list[dict[str, object]]:
    filters = {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
    }
    answer = httpx.post(f"{prefect}/api/flow_runs/filter", json=filters, timeout=10)
    answer.raise_for_status()
    runs: list[dict[str, object]] = answer.json()
    return runs


def _wait_for_a_completed_run(prefect: str, deployment_id: str) -> dict[str, object]:
    deadline = time.monotonic() + FIRST_RUN_COMPLETES_WITHIN_SECONDS
    while time.monotonic() < deadline:
        runs = _completed_runs(prefect, deployment_id)
        if runs:
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"no scheduled run completed in {FIRST_RUN_COMPLETES_WITHIN_SECONDS} s")


@pytest.mark.slow
def test_up_runs_the_schedule_starts_once_restarts_the_dead_and_down_leaves_nothing(
    project_settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = shrink(
        project_settings,
        "scheduled-digits",
        train={"max_epochs": 2},
        deploy={"interval_seconds": SCHEDULED_EVERY_SECONDS},
        serve={"port": free_port()},
    )
    params = write_params(settings, tmp_path)
    prefect_port, mlflow_port, api_port = free_port(), free_port(), free_port()
    prefect = f"http://127.0.0.1:{prefect_port}"
    ports = ["--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]
    ports += ["--api-port", str(api_port)]
    command = ["up", *ports, "--params", str(params)]
    started = _mlaas(home, *command)
    groups: set[int] = set()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = {part: _recorded_pid(home, part) for part in PARTS}
        groups |= set(pids.values())
        assert httpx.get(f"{prefect}/api/health", timeout=5).json() is True
        assert httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=5).status_code == 200
        assert _states(_mlaas(home, "status").stdout) == dict.fromkeys(PARTS, "up")

        # The deployment, as the Prefect API (and so its UI) shows it.
        deployment = httpx.get(
            f"{prefect}/api/deployments/name/training_pipeline/scheduled-digits", timeout=5
        ).json()
        assert deployment["schedules"][0]["schedule"]["interval"] == SCHEDULED_EVERY_SECONDS
        assert deployment["parameters"] == {"params": str(params.resolve()), "home": str(home)}
        assert deployment["global_concurrency_limit"]["limit"] == 1

        # A run nobody asked for: the schedule's, completed, with the pipeline's champion.
        run = _wait_for_a_completed_run(prefect, deployment["id"])
        assert run["auto_scheduled"] is True
        assert (home / "pipelines" / "scheduled-digits" / "package" / "package.json").is_file()
        # Prefect 3.8.8 with SQLAlchemy 2.1 logged "Can't evaluate bulk DML statement" here and
        # never created a scheduled run.
        server_log = (home / "logs" / "prefect.log").read_text()
        assert "ERROR" not in server_log and "bulk DML" not in server_log

        # Twice: no second copy.
        again = _mlaas(home, *command)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count("already up") == len(PARTS)
        assert {part: _recorded_pid(home, part) for part in PARTS} == pids

        # The MLflow server's leader killed from outside: its workers still hold the port.
        os.kill(pids["mlflow"], signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pids["mlflow"]).wait(timeout=10)
        assert _states(_mlaas(home, "status").stdout)["mlflow"] == "dead"
        restarted = _mlaas(home, *command)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert "mlflow: pid" in restarted.stdout and "starting it again" in restarted.stdout
        assert _recorded_pid(home, "prefect") == pids["prefect"]
        new_mlflow_pid = _recorded_pid(home, "mlflow")
        groups.add(new_mlflow_pid)
        assert new_mlflow_pid != pids["mlflow"]
        assert not _group_of(pids["mlflow"]), "the dead server's workers were left running"
        assert httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=5).status_code == 200
    finally:
        # The model server the API started for the scheduled champion too, if it got that far.
        groups |= {int(json.loads(r.read_text())["pid"]) for r in (home / "run").glob("*.json")}
        stopped = _mlaas(home, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [p for group in groups for p in _group_of(group)], "a process of ours outlived down"
    assert _states(_mlaas(home, "status").stdout) == dict.fromkeys(PARTS, "down")
    assert not list((home / "run").glob("*.json"))


def test_up_refuses_a_port_another_program_holds_and_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        refused = _mlaas(
            home,
            "up",
            *("--prefect-port", str(taken), "--mlflow-port", str(free_port())),
            *("--params", str(PROJECT_ROOT / "params.yaml")),
        )
    assert refused.returncode == 2
    assert f"prefect: port {taken} on 127.0.0.1 is already in use" in refused.stderr
    assert "--prefect-port N" in refused.stderr and "Traceback" not in refused.stderr
    assert not list((home / "run").glob("*.json"))
