"""Pipeline runs started at the same moment on one `$MLAAS_HOME` all finish, and the registry
ends consistent: one champion per model, versions numbered without gaps or duplicates, every
version decided against the champion as it was when it was decided, the newest Bento the
champion's.

Three real `mlaas run` processes on a fresh folder: two of one pipeline (different seeds, so
each registers a new version) and one of another pipeline, which runs alongside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tests.conftest import shrink, write_params

from mlaas.core.settings import Settings
from mlaas.stages.promote import DECISION_TAG
from mlaas.stores.locks import local_lock
from mlaas.stores.registry import CHAMPION, Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
RUN_TIMEOUT_S = 900


def _start_run(params: Path, home: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        MLAAS_HOME=str(home),
        # Starting Prefect's local API takes longer than its 20 s default on a busy machine.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    with log.open("w") as output:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "mlaas"), "run", "--params", str(params)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _wait_until_waiting(started: list[tuple[subprocess.Popen[bytes], Path]], message: str) -> None:
    """Until every process's log says `message`; a process that ends first fails the test."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not all(message in log.read_text() for _, log in started):
        for process, log in started:
            assert process.poll() is None, f"ended before waiting:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {message!r} in {RUN_TIMEOUT_S} s"
        time.sleep(1)


def _latest_bento_labels(workspace: Workspace, name: str) -> dict[str, str]:
    bentos = workspace.bentoml_home / "bentos" / name
    latest = (bentos / "latest").read_text().strip()
    return dict(yaml.safe_load((bentos / latest / "bento.yaml").read_text())["labels"])


def _assert_consistent(registry: Registry, workspace: Workspace, name: str, runs: int) -> None:
    versions = registry.versions(name)
    assert versions == list(range(1, runs + 1))
    decisions = {
        version: json.loads(registry.version_tags(name, version)[DECISION_TAG])
        for version in versions
    }
    # Each version was decided against the champion left by the one decided before it.
    champion = None
    history = []
    for version in versions:
        assert decisions[version]["champion_version"] == champion
        if decisions[version]["promoted"]:
            champion = version
            history.append(version)
    assert registry.aliases(name)[CHAMPION] == champion
    assert registry.champion_history(name) == history
    assert _latest_bento_labels(workspace, name)["mlaas.version"] == str(champion)


def test_runs_started_together_leave_a_consistent_registry(
    project_settings: Settings, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path / "home")
    quick = {"max_epochs": 1}  # any model: the registry's bookkeeping is what is checked
    runs = {
        "race-1": shrink(project_settings, "race", pipeline={"seed": 1}, train=quick),
        "race-2": shrink(project_settings, "race", pipeline={"seed": 2}, train=quick),
        "other": shrink(project_settings, "other", pipeline={"seed": 1}, train=quick),
    }
    # The two runs of one pipeline meet at its run lock, whatever the machine's speed: the lock
    # is held here until both wait on it (each says so), then they take turns. Left to chance,
    # the first could end while the second still starts Prefect's local API.
    held = local_lock(workspace, "run-race")
    assert held.acquire(timeout=0)
    processes = {}
    try:
        for label, settings in runs.items():
            folder = tmp_path / label
            folder.mkdir()
            log = folder / "run.log"
            params = write_params(settings, folder)
            processes[label] = (_start_run(params, workspace.home, log), log)
        _wait_until_waiting(
            [processes["race-1"], processes["race-2"]],
            "waiting for another mlaas process running pipeline 'race'",
        )
    except BaseException:
        for process, _ in processes.values():
            process.kill()
        raise
    finally:
        held.release()

    for label, (process, log) in processes.items():
        returncode = process.wait(timeout=RUN_TIMEOUT_S)
        assert returncode == 0, f"{label} failed:\n{log.read_text()[-4000:]}"

    registry = Registry(workspace)
    _assert_consistent(registry, workspace, "race", runs=2)
    _assert_consistent(registry, workspace, "other", runs=1)
