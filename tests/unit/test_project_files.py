"""The project's own files agree with each other: configs, bentofile, lock file, dvc.yaml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from mlaas.dvcfile import prepare, read_pipeline_list, render_dvc_yaml
from mlaas.families import check_settings
from mlaas.settings import load_settings
from mlaas.stages import STAGE_TABLE, STAGES
from mlaas.workspace import PipelinePaths

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


def test_the_bento_pins_what_the_lock_file_pins() -> None:
    bento = _pins(yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"])
    locked = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for name, version in bento.items():
        assert locked[name].split("+")[0] == version, name


def test_the_committed_dvc_yaml_is_the_one_the_stage_table_generates() -> None:
    assert (ROOT / "dvc.yaml").read_text() == render_dvc_yaml(), "run `mlaas dvc-yaml`"


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
    from mlaas.tasks import PLOTS

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
