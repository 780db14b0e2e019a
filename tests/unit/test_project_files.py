"""The project's own files agree with each other: configs, bentofile, lock file, dvc.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlaas.families import check_settings
from mlaas.settings import load_settings
from mlaas.stages import STAGES

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


def test_dvc_runs_every_stage_through_the_cli() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert tuple(stages) == STAGES
    for name, stage in stages.items():
        assert stage["cmd"] == f"mlaas --home .mlaas stage {name}"
