"""What evaluation tells beyond the figures, through the real stages: a line per epoch when
training's output is not a terminal, confidence intervals beside every test metric (MLflow, the
manifest, the served /model), a warning for a test split too small to tell models apart, the
learning curves of a network, and `mlaas compare` naming both champion and challenger."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import served, shrink, write_params

from mlaas.cli.compare import format_table, runs_for_dataset
from mlaas.core.records import SplitInfo
from mlaas.core.settings import Settings
from mlaas.stages.table import run_stage
from mlaas.stores.registry import CHALLENGER, CHAMPION, Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
CLASSIFICATION_METRICS = ("test_accuracy", "test_f1_macro", "test_precision_macro")


@pytest.fixture(scope="module")
def digits(
    project_settings: Settings,
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The tiny CNN on digits up to promotion, its training run as `dvc repro` runs it: `mlaas
    stage train` in a process whose output is a pipe, as in CI or a log file."""
    settings = shrink(project_settings, "extras-digits", train={"max_epochs": 3})
    params = write_params(settings, tmp_path_factory.mktemp("digits"))
    for stage in ("load", "validate", "split"):
        run_stage(stage, settings, session_workspace)
    mlaas = Path(sys.executable).parent / "mlaas"
    training = subprocess.run(
        [mlaas, "--home", session_workspace.home, "stage", "train", "--params", params],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert training.returncode == 0, training.stderr[-3000:]
    for stage in ("evaluate", "register", "promote"):
        run_stage(stage, settings, session_workspace)
    return {"settings": settings, "training": training}


def _test_rows(workspace: Workspace, pipeline: str) -> int:
    splits = SplitInfo.model_validate_json(workspace.pipeline(pipeline).splits_record.read_text())
    return splits.test.rows


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def wine(
    project_settings: Settings,
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """Two versions of a logistic regression on wine (18 test rows): the second one, no better,
    stays challenger; promote's warnings are kept."""
    settings = shrink(
        project_settings,
        "extras-wine",
        pipeline={"family": "tabular"},
        load={"source": "wine"},
        train={"model": {"name": "logistic_regression"}},
    )
    warnings = _Warnings()
    logging.getLogger("mlaas").addHandler(warnings)
    try:
        for _ in range(2):
            for stage in ("load", "validate", "split", "train", "evaluate", "register", "promote"):
                run_stage(stage, settings, session_workspace)
        run_stage("package", settings, session_workspace)
    finally:
        logging.getLogger("mlaas").removeHandler(warnings)
    yield {
        "settings": settings,
        "params": write_params(settings, tmp_path_factory.mktemp("wine")),
        "warnings": warnings.messages,
    }


def test_training_logs_one_line_per_epoch_when_its_output_is_not_a_terminal(
    digits: dict[str, Any],
) -> None:
    output = digits["training"].stdout + digits["training"].stderr
    lines = re.findall(r"mlaas\.modeling\.lightning_fit - epoch (\d+)/3: (.*)", output)
    assert [int(epoch) for epoch, _ in lines] == [1, 2, 3], output[-3000:]
    for _, figures in lines:
        names = dict(pair.split("=") for pair in figures.split())
        assert {"train_loss", "val_loss", "val_accuracy", "train_accuracy"} <= set(names)
        assert all(float(value) >= 0 for value in names.values())
    assert "\r" not in output  # no progress bar redrawn into a log


def test_every_test_metric_has_its_interval_in_mlflow_and_the_manifest(
    digits: dict[str, Any], session_workspace: Workspace
) -> None:
    registry = Registry(session_workspace)
    champion = registry.version_with_alias("extras-digits", CHAMPION)
    assert champion is not None
    metrics = registry.run_metrics(champion.run_id)
    for name in CLASSIFICATION_METRICS:
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"], name
    manifest = registry.run_json(champion.run_id, "manifest.json")
    assert manifest["metrics"]["test_accuracy_ci_low"] == metrics["test_accuracy_ci_low"]
    assert manifest["test_split"]["rows"] == _test_rows(session_workspace, "extras-digits")
    assert manifest["test_split"]["confidence_level"] == 0.95


def test_a_networks_learning_curves_are_logged_beside_the_confusion_matrix(
    digits: dict[str, Any], wine: dict[str, Any], session_workspace: Workspace
) -> None:
    registry = Registry(session_workspace)

    def plots(pipeline: str) -> set[str]:
        champion = registry.version_with_alias(pipeline, CHAMPION)
        assert champion is not None
        return {
            Path(a.path).name for a in registry.client.list_artifacts(champion.run_id, "evaluation")
        }

    assert {"confusion_matrix.png", "learning_curves.png"} <= plots("extras-digits")
    # A scikit-learn model has no epochs, so no curves.
    assert "confusion_matrix.png" in plots("extras-wine")
    assert "learning_curves.png" not in plots("extras-wine")


def test_a_test_split_too_small_to_tell_models_apart_is_warned_about(
    wine: dict[str, Any], session_workspace: Workspace, tmp_path: Path
) -> None:
    assert any("too small to tell models apart" in m for m in wine["warnings"]), wine["warnings"]
    # The served /model shows the intervals and the warning: they come from the registered run.
    with served(wine["params"], session_workspace, tmp_path / "server.log") as url:
        described = httpx.get(f"{url}/model", timeout=30).json()
    metrics = described["metrics"]
    assert metrics["test_accuracy_ci_low"] <= metrics["test_accuracy"]
    assert metrics["test_accuracy"] <= metrics["test_accuracy_ci_high"]
    test_split = described["manifest"]["test_split"]
    assert test_split["rows"] == _test_rows(session_workspace, "extras-wine") < 30
    assert "too small to tell models apart on test_accuracy" in test_split["too_small_warning"]
    assert (
        described["manifest"]["metrics"]["test_f1_macro_ci_high"]
        == metrics["test_f1_macro_ci_high"]
    )


def test_compare_names_the_challenger_as_well_as_the_champion(
    wine: dict[str, Any], session_workspace: Workspace
) -> None:
    registry = Registry(session_workspace)
    aliases = registry.aliases("extras-wine")
    assert aliases == {CHAMPION: 1, CHALLENGER: 2}
    found = runs_for_dataset(session_workspace, "wine")
    rows = {row.version: row for row in found if row.pipeline == "extras-wine"}
    assert rows["1"].aliases == (CHAMPION,) and rows["2"].aliases == (CHALLENGER,)
    table = format_table(list(rows.values()))
    assert re.search(r"v2 challenger", table) and re.search(r"v1 champion", table)
