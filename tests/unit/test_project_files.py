"""The project's own files agree with each other: configs, bentofile, lock file, dvc.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlaas.core.settings import load_settings
from mlaas.families import check_settings
from mlaas.orchestration.dvcfile import PACKAGE, prepare, read_pipeline_list, render_dvc_yaml
from mlaas.orchestration.imports import imported_files, package_modules
from mlaas.stages.table import STAGE_TABLE, STAGES, StageFiles
from mlaas.stores.workspace import PipelinePaths

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        requirement = line.split("#")[0].strip()
        if "==" in requirement:
            name, version = requirement.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_config_is_valid_and_names_its_own_pipeline(config: Path) -> None:
    settings = load_settings(config)
    check_settings(settings)
    assert settings.pipeline.name == config.stem or config.stem == "mnist_cnn"


def test_every_config_has_its_own_registered_model_name() -> None:
    names = [load_settings(c).pipeline.name for c in (ROOT / "configs").glob("*.yaml")]
    assert len(names) == len(set(names))


def test_the_bento_installs_the_serving_lock_and_it_is_current() -> None:
    python = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]
    lock = ROOT / "src" / "serving-requirements.txt"
    assert (ROOT / "src" / python["requirements_txt"]).resolve() == lock
    done = subprocess.run(
        [sys.executable, "scripts/serving_lock.py", "--check"], cwd=ROOT, capture_output=True
    )
    assert done.returncode == 0, "serving-requirements.txt is stale: python scripts/serving_lock.py"
    served = _pins(lock.read_text().splitlines())
    locked = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert {"bentoml", "torch", "scikit-learn", "transformers", "starlette"} <= set(served)
    for name, version in served.items():
        assert locked[name].split("+")[0] == version, name


def test_the_committed_dvc_yaml_is_the_one_the_stage_table_generates() -> None:
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml(), "run `mlaas dvc-yaml`"


def _committed_deps(stage: str) -> list[Path]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return [ROOT / dep for dep in stages[stage]["do"]["deps"]]


def _is_among(file: Path, deps: list[Path]) -> bool:
    return any(file == dep or file.is_relative_to(dep) for dep in deps)


@pytest.mark.parametrize("stage", STAGE_TABLE, ids=lambda stage: stage.name)
def test_every_module_a_stage_imports_is_among_its_committed_dvc_deps(stage: StageFiles) -> None:
    deps = _committed_deps(stage.name)
    missing = [f for f in imported_files(stage.modules, PACKAGE) if not _is_among(f, deps)]
    assert not missing, "run `mlaas dvc-yaml`"


def test_split_depends_on_the_families_and_tasks_it_imports() -> None:
    deps = _committed_deps("split")
    for module in ("stages/split.py", "core/tasks.py", "families/__init__.py", "families/base.py"):
        assert _is_among(PACKAGE / module, deps), module


def test_train_depends_on_the_worker_process_it_runs() -> None:
    assert _is_among(PACKAGE / "modeling/train_worker.py", _committed_deps("train"))


def test_package_depends_on_all_the_bento_carries() -> None:
    deps = _committed_deps("package")
    assert all(_is_among(module, deps) for module in package_modules(PACKAGE).values())
    assert ROOT / "bentofile.yaml" in deps
    assert ROOT / "src" / "serving-requirements.txt" in deps


@pytest.mark.slow
def test_the_modules_read_from_splits_source_include_those_python_imports() -> None:
    """The static reading against Python itself (only top-level imports run at import)."""
    shown = subprocess.run(
        [sys.executable, "-c", "import sys, mlaas.stages.split; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    modules = package_modules(PACKAGE)
    imported = {modules[name] for name in shown if name in modules}
    assert PACKAGE / "core" / "tasks.py" in imported
    assert imported <= set(imported_files(("mlaas.stages.split",), PACKAGE))


def test_dvc_runs_every_stage_of_each_pipeline_through_the_cli_on_its_resolved_params() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGES
    settings = ".mlaas/pipelines/${item}/params.yaml"
    for name, stage in stages.items():
        assert stage["foreach"] == "${pipelines}"
        assert stage["do"]["cmd"] == f"mlaas --home .mlaas stage {name} --params {settings}"
        assert list(stage["do"]["params"][0]) == [settings]


@pytest.mark.parametrize(
    "config",
    [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))],
    ids=lambda p: p.stem,
)
def test_every_config_resolves_to_every_section_its_dvc_stages_read(
    config: Path, tmp_path: Path
) -> None:
    settings = load_settings(config)
    targets = prepare(settings, tmp_path)
    name = settings.pipeline.name
    assert targets == [f"{stage}@{name}" for stage in STAGES]
    assert read_pipeline_list(tmp_path) == [name]
    resolved_path = tmp_path / ".mlaas" / "pipelines" / name / "params.yaml"
    resolved = yaml.safe_load(resolved_path.read_text())
    for stage in STAGE_TABLE:
        assert set(stage.params) <= set(resolved), stage.name
    assert load_settings(resolved_path) == settings  # the stages run on the very same settings


def test_dvc_tracks_the_plots_folder_that_evaluate_writes() -> None:
    from mlaas.stages.evaluate_plots import PLOTS

    paths = PipelinePaths(Path("pipeline"))
    (evaluate,) = [stage for stage in STAGE_TABLE if stage.name == "evaluate"]
    assert evaluate.plots(paths) == (paths.evaluation_dir / PLOTS,)


def test_make_repro_reproduces_the_params_file_it_is_given() -> None:
    shown = subprocess.run(
        ["make", "--dry-run", "repro", "PARAMS=configs/wine_svm.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mlaas repro --params configs/wine_svm.yaml" in shown


def test_a_second_pipeline_is_listed_beside_the_first(tmp_path: Path) -> None:
    for config in ("wine_svm", "diabetes_ridge", "wine_svm"):
        prepare(load_settings(ROOT / "configs" / f"{config}.yaml"), tmp_path)
    assert read_pipeline_list(tmp_path) == ["diabetes_ridge", "wine_svm"]
