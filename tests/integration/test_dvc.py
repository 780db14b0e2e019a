"""`make repro PARAMS=…` (`mlaas repro`) runs the same stages through `dvc repro`, for params.yaml
and for any config, one pipeline beside another; a second repro with nothing changed does nothing.
Runs in a copy of the project (its own git repo and .mlaas/), like a user's clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tests.conftest import PROJECT_ROOT, shrink

from mlaas.core.settings import Settings, load_settings
from mlaas.orchestration.dvcfile import prepare, stage_targets
from mlaas.stages.table import STAGES

CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
Run = Callable[..., str]


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # dvc.lock is the developer's own machine state (see the README), never part of a clone.
    return [name for name in listed if (PROJECT_ROOT / name).is_file() and name != "dvc.lock"]


def _clone(copy: Path, params: Settings | None = None) -> Run:
    """Copy the project (with `params` as its params.yaml) into a fresh git repository; return a
    runner of commands inside it."""
    for name in _project_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, copy / name)
    if params is not None:
        (copy / "params.yaml").write_text(yaml.safe_dump(params.as_params(), sort_keys=False))
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
    return run


@pytest.fixture(scope="module")
def reproduced(
    project_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Run, str]:
    """A clone whose params.yaml (shrunk to digits) went through `mlaas repro` once."""
    settings = shrink(
        project_settings,
        "dvc-digits",
        train={"max_epochs": 1},  # any model: what DVC runs and records is checked, not how well
        package={"bentofile": "bentofile.yaml", "build_context": "src"},
    )
    copy = tmp_path_factory.mktemp("dvc") / "project"
    run = _clone(copy, settings)
    first = run("mlaas", "repro", "--params", "params.yaml")
    return copy, run, first


@pytest.mark.slow
def test_repro_reproduces_and_then_has_nothing_to_do(reproduced: tuple[Path, Run, str]) -> None:
    copy, run, first = reproduced
    for target in stage_targets("dvc-digits"):
        assert f"Running stage '{target}'" in first
    outputs = copy / ".mlaas" / "pipelines" / "dvc-digits"
    assert (outputs / "evaluation" / "metrics.json").is_file()
    assert (outputs / "package" / "package.json").is_file()
    assert "pushed" in first
    assert any((copy / ".mlaas" / "dvc" / "remote").rglob("*"))

    second = run("mlaas", "repro", "--params", "params.yaml")
    assert "Data and pipelines are up to date" in second
    assert "Running stage" not in second


@pytest.mark.slow
def test_a_config_that_omits_sections_reproduces_beside_the_first_pipeline(
    reproduced: tuple[Path, Run, str],
) -> None:
    copy, run, _ = reproduced
    config = PROJECT_ROOT / "configs" / "wine_svm.yaml"
    omitted = {"evaluate", "promote", "package", "serve"}
    assert omitted.isdisjoint(yaml.safe_load(config.read_text()))  # what DVC used to stop on
    first_metrics = copy / ".mlaas" / "pipelines" / "dvc-digits" / "evaluation" / "metrics.json"
    before = first_metrics.read_bytes()

    other = run("mlaas", "repro", "--params", "configs/wine_svm.yaml")
    for target in stage_targets("wine_svm"):
        assert f"Running stage '{target}'" in other
    assert "@dvc-digits" not in other  # the first pipeline is neither re-run nor removed
    assert (copy / ".mlaas" / "pipelines" / "wine_svm" / "package" / "package.json").is_file()
    assert first_metrics.read_bytes() == before

    # Each pipeline keeps its own entries in dvc.lock: going back to the first re-runs nothing.
    again = run("mlaas", "repro", "--params", "params.yaml")
    assert "Running stage" not in again
    assert "Data and pipelines are up to date" in run("dvc", "status")


def test_every_config_gives_dvc_every_parameter_its_stages_read(tmp_path: Path) -> None:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    copy = tmp_path / "project"
    run = _clone(copy)
    names = set()
    for config in [PROJECT_ROOT / "params.yaml", *CONFIGS]:
        settings = load_settings(config)
        prepare(settings, copy)
        names.add(settings.pipeline.name)

    status = run("dvc", "status")  # parses dvc.yaml for every pipeline, reads every params file
    assert "missing" not in status.lower()
    with Repo(str(copy)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
        assert set(stages) == {f"{stage}@{name}" for stage in STAGES for name in names}
        for stage in stages.values():
            for dependency in stage.deps:
                if isinstance(dependency, ParamsDependency):
                    # What `dvc repro` does after a stage: "Parameters '…' are missing" if not all.
                    dependency.get_hash()


def _stages_reported(status: str) -> set[str]:
    """The stages `dvc status` lists as changed (each on a line of its own, unindented)."""
    return {line[:-1] for line in status.splitlines() if line.endswith(":") and line[0].isalnum()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "reported"),
    [
        # Every stage but validate imports tasks.py (the Bento carries it too); split's
        # hand-written deps used to leave it out.
        ("core/tasks.py", set(STAGES) - {"validate"}),
        ("serving/gateway.py", {"package"}),  # no stage imports it; only the Bento carries it
    ],
)
def test_changing_a_module_a_stage_imports_makes_dvc_status_report_that_stage(
    reproduced: tuple[Path, Run, str], module: str, reported: set[str]
) -> None:
    copy, run, _ = reproduced
    source = copy / "src" / "mlaas" / module
    original = source.read_bytes()
    try:
        source.write_bytes(original + b"# a change DVC must see\n")
        changed = _stages_reported(run("dvc", "status", *stage_targets("dvc-digits")))
        assert changed == {f"{stage}@dvc-digits" for stage in reported}
    finally:
        source.write_bytes(original)
    assert "Data and pipelines are up to date" in run("dvc", "status")


@pytest.mark.slow
def test_the_bytecode_python_writes_beside_the_sources_changes_no_stage(
    reproduced: tuple[Path, Run, str],
) -> None:
    copy, run, _ = reproduced
    cache = copy / "src" / "mlaas" / "__pycache__"
    cache.mkdir(exist_ok=True)
    bytecode = cache / "gateway.cpython-311.pyc"  # what serving from the project's src writes
    bytecode.write_bytes(b"bytecode")
    try:
        assert "Data and pipelines are up to date" in run("dvc", "status")
    finally:
        bytecode.unlink()
