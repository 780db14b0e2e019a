"""`dvc repro` runs the same stages from dvc.yaml; a second `dvc repro` with nothing changed
does nothing. Runs in a copy of the project (its own git repo and .mlaas/), like a user's clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.conftest import PROJECT_ROOT, shrink

from mlaas.settings import Settings

pytestmark = pytest.mark.slow


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [name for name in listed if (PROJECT_ROOT / name).is_file()]


def test_dvc_repro_reproduces_and_then_has_nothing_to_do(
    project_settings: Settings, tmp_path: Path
) -> None:
    copy = tmp_path / "project"
    for name in _project_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, copy / name)
    settings = shrink(
        project_settings,
        "dvc-digits",
        package={"bentofile": "bentofile.yaml", "build_context": "src"},
    )
    (copy / "params.yaml").write_text(yaml.safe_dump(settings.as_params(), sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }

    def run(*command: str) -> str:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "copy")
    first = run("dvc", "repro")
    for stage in (
        "load",
        "validate",
        "split",
        "train",
        "evaluate",
        "register",
        "promote",
        "package",
    ):
        assert f"Running stage '{stage}'" in first
    outputs = copy / ".mlaas" / "pipelines" / "dvc-digits"
    assert (outputs / "evaluation" / "metrics.json").is_file()
    assert (outputs / "package" / "package.json").is_file()

    second = run("dvc", "repro")
    assert "Data and pipelines are up to date" in second
    assert "Running stage" not in second

    pushed = run("dvc", "push")
    assert "pushed" in pushed
    assert any((copy / ".mlaas" / "dvc" / "remote").rglob("*"))
