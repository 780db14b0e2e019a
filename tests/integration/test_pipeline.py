"""The whole training_pipeline flow on digits, in a temporary MLAAS_HOME, with real services."""

from __future__ import annotations

import re
from typing import Any

import bentoml
import mlflow
import numpy as np
import psutil
import pytest

from mlaas.stores.registry import CHAMPION, Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow


def test_the_flow_registers_a_first_version_as_champion(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    name = pipeline_run["settings"].pipeline.name
    result = pipeline_run["result"]
    assert result["retrained"] is True
    assert (result["version"], result["alias"], result["champion_version"]) == (1, CHAMPION, 1)
    champion = Registry(session_workspace).version_with_alias(name, CHAMPION)
    assert champion is not None and champion.version == 1
    # A tiny CNN on sklearn's digits still has to learn something real.
    assert result["metrics"]["test_accuracy"] >= 0.8


def test_the_version_carries_lineage_and_queryable_tags(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    name = pipeline_run["settings"].pipeline.name
    tags = Registry(session_workspace).version_tags(name, 1)
    assert tags["mlaas.family"] == "image"
    assert tags["mlaas.model"] == "cnn"
    assert tags["mlaas.dataset"] == "digits"
    for key in ("mlaas.data_hash", "mlaas.model_sha256", "mlaas.code_version", "mlaas.lock_hash"):
        assert re.fullmatch(r"[0-9a-f]{64}", tags[key]), key
    assert re.fullmatch(r"([0-9a-f]{40}(-dirty)?|unknown)", tags["mlaas.git_commit"])
    assert tags["mlaas.validation"].endswith("expectations met")
    assert '"promoted":true' in tags["mlaas.decision"].replace(" ", "")


def test_the_version_has_a_signature_an_input_example_and_predicts(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    name = pipeline_run["settings"].pipeline.name
    uri = f"models:/{name}/1"
    mlflow.set_tracking_uri(session_workspace.tracking_uri)
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    outputs = {spec["name"] for spec in info.signature.outputs.to_dict()}
    assert outputs == {"label", "probabilities"}  # what the endpoint answers
    model = mlflow.pyfunc.load_model(uri)
    predictions = model.predict(np.zeros((3, 8, 8), dtype=np.uint8))
    assert len(predictions) == 3
    for prediction in predictions:
        assert prediction["label"] in range(10)
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_the_manifest_holds_the_whole_reproducibility_record(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    registry = Registry(session_workspace)
    version = registry.version_with_alias(pipeline_run["settings"].pipeline.name, CHAMPION)
    assert version is not None
    manifest = registry.run_json(version.run_id, "manifest.json")
    assert manifest["git_commit"] and manifest["code_version"]
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["data"]["content_hash"])
    assert manifest["params"]["train"]["model"]["conv_channels"] == [16]
    assert manifest["seed"] == pipeline_run["settings"].pipeline.seed
    assert manifest["lock_file"]["path"] == "constraints.txt"
    assert manifest["packages"]["torch"].startswith("2.13.0")
    assert manifest["validation"]["success"] is True
    assert (
        manifest["metrics"]["test_accuracy"] == pipeline_run["result"]["metrics"]["test_accuracy"]
    )
    assert manifest["promotion"]["promoted"] is True
    assert manifest["promotion"]["champion_version"] is None


def test_reports_and_plots_are_written_and_logged(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    paths = session_workspace.pipeline(pipeline_run["settings"].pipeline.name)
    assert paths.validation_result.is_file()
    assert not (paths.validation_dir / "docs").exists()  # Data Docs are built for failures
    assert (paths.evaluation_dir / "plots" / "confusion_matrix.png").stat().st_size > 1000
    registry = Registry(session_workspace)
    version = registry.version_with_alias(pipeline_run["settings"].pipeline.name, CHAMPION)
    assert version is not None
    metrics = registry.run_metrics(version.run_id)
    for key in ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro"):
        assert 0.0 <= metrics[key] <= 1.0
    assert "val_loss" in metrics and "train_loss" in metrics


def test_the_champion_is_packaged_as_a_bento(pipeline_run: dict[str, Any]) -> None:
    name = pipeline_run["settings"].pipeline.name
    bento = bentoml.bentos.get(f"{name}:latest")
    assert bento.info.labels["mlaas.version"] == "1"
    assert str(bento.tag) == pipeline_run["result"]["bento"]
    model = bentoml.models.get(bento.info.labels["mlaas.model_tag"])
    assert (model.path_of("model/weights.pt")) and (model.path_of("serving.json"))


def test_a_second_run_with_nothing_changed_retrains_nothing(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    from flows.training_pipeline import training_pipeline

    name = pipeline_run["settings"].pipeline.name
    again = training_pipeline(params=str(pipeline_run["params"]), home=str(session_workspace.home))
    assert again["retrained"] is False
    assert again["version"] == 1 and again["champion_version"] == 1
    assert again["bento"] == pipeline_run["result"]["bento"]
    client = Registry(session_workspace).client
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [1]
    # The training process the flow started ahead of the train stage, unused (a cache hit), was
    # ended with the run.
    children = psutil.Process().children(recursive=True)
    assert not [c for c in children if "mlaas.modeling.train_worker" in " ".join(c.cmdline())]


def test_an_example_request_is_logged_beside_the_model(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    registry = Registry(session_workspace)
    version = registry.version_with_alias(pipeline_run["settings"].pipeline.name, CHAMPION)
    assert version is not None
    request = registry.run_json(version.run_id, "example_request.json")
    assert len(request["instances"]) == 2
    assert np.asarray(request["instances"]).shape == (2, 8, 8)
