"""`mlaas rollback NAME`: the champion alias goes back to the previous champion, the rolled-back
version is marked so it is neither re-promoted nor rolled back to, and a server started after
the rollback serves the restored champion."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.conftest import served, shrink, started_side_by_side, write_params

from mlaas.core.settings import Settings
from mlaas.stages.rollback import ROLLED_BACK_TAG, previous_champion
from mlaas.stages.table import STAGES, run_stage
from mlaas.stores.registry import CHAMPION, Registry
from mlaas.stores.workspace import Workspace


@pytest.mark.parametrize(
    ("history", "current", "excluded", "expected"),
    [
        ([1, 2, 3], 3, set(), 2),
        ([1, 2, 3], 3, {2}, 1),  # v2 was rolled back (or deleted) before
        ([1, 2, 3], 2, set(), 1),  # v3 lost the alias by hand: back from v2
        ([1, 2], 5, set(), 2),  # v5 was made champion by hand: back to the last recorded one
        ([1], 1, set(), None),
        ([], 4, set(), None),
    ],
)
def test_previous_champion(
    history: list[int], current: int, excluded: set[int], expected: int | None
) -> None:
    assert previous_champion(history, current, excluded) == expected


def _mlaas(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "mlaas"), *args],
        env={**os.environ, "MLAAS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _mlaas_side_by_side(home: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent `mlaas` commands at once: each is mostly a process importing its libraries."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: _mlaas(home, *command), commands))


def _model_version(base: str) -> tuple[int, str]:
    body = httpx.get(f"{base}/model", timeout=10).json()
    return body["version"], body["alias"]


def _served_version(params: Path, workspace: Workspace, log: Path) -> tuple[int, str]:
    with served(params, workspace, log) as base:
        return _model_version(base)


@pytest.mark.slow
def test_rollback_restores_the_previous_champion_and_the_server_follows(
    project_settings: Settings, session_workspace: Workspace, tmp_path: Path
) -> None:
    name = "rollback"
    # v1: one epoch at a tiny learning rate; v2: two at the real one, which beat it.
    worse = shrink(project_settings, name, train={"max_epochs": 1, "learning_rate": 1e-5})
    better = shrink(project_settings, name, train={"max_epochs": 2})
    for settings in (worse, better):
        for stage in STAGES:
            run_stage(stage, settings, session_workspace)
    registry = Registry(session_workspace)
    assert registry.aliases(name)[CHAMPION] == 2
    assert registry.champion_history(name) == [1, 2]
    params = write_params(better, tmp_path)
    assert _served_version(params, session_workspace, tmp_path / "before.log") == (2, CHAMPION)

    done = _mlaas(session_workspace.home, "rollback", name, "--params", str(params))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"champion of {name}: v2 -> v1" in done.stdout
    assert registry.aliases(name)[CHAMPION] == 1
    assert ROLLED_BACK_TAG in registry.version_tags(name, 2)
    assert registry.champion_history(name) == [1]
    # A server started after the rollback serves the restored champion. It loads while the
    # checks below run: they leave the champion where it is (each asserts so).
    with started_side_by_side() as start:
        after = start(params, session_workspace, tmp_path / "after.log")

        # Running the rolled-back version's pipeline again reports its decision; it does not
        # take the alias back.
        promotion = run_stage("promote", better, session_workspace)
        assert promotion.champion.version == 1  # type: ignore[attr-defined]
        assert promotion.decided_now is False  # type: ignore[attr-defined]

        again, unknown = _mlaas_side_by_side(
            session_workspace.home,
            ["rollback", name, "--params", str(params)],
            ["rollback", "no-such-model", "--params", str(params)],
        )
        assert again.returncode == 2
        assert "no earlier champion to roll back to from v1" in again.stderr
        assert "rolled back: [2]" in again.stderr
        assert registry.aliases(name)[CHAMPION] == 1
        assert unknown.returncode == 2
        assert "no registered model 'no-such-model'" in unknown.stderr

        assert _model_version(after.result().url) == (1, CHAMPION)
