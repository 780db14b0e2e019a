"""The tracking store keeps everything under $MLAAS_HOME, and marks its experiments as model
training ones (so MLflow 3's UI opens them on their runs, not on its GenAI traces view)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient

from mlaas.stores.registry import check_tracking_store
from mlaas.stores.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, Tracker, flatten
from mlaas.stores.workspace import Workspace


def _local_path(artifact_location: str) -> Path:
    return Path(urlparse(artifact_location).path)


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder that is not the workspace (as when a user runs mlaas from a project)."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_the_default_experiment_lives_under_the_workspace_from_the_start(
    elsewhere: Path, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path / "home")
    workspace.ensure_writable(min_free_mb=0)
    check_tracking_store(workspace, "digits")
    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    default = client.get_experiment("0")
    assert _local_path(default.artifact_location).is_relative_to(workspace.mlflow_artifacts)
    # A run in the Default experiment (MLflow's own tools put runs there) writes under it too.
    run = client.create_run("0")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    client.log_artifact(run.info.run_id, str(note))
    assert (_local_path(run.info.artifact_uri) / "note.txt").is_file()
    assert _local_path(run.info.artifact_uri).is_relative_to(workspace.home)
    assert list(elsewhere.iterdir()) == []  # no ./mlruns


def test_every_experiment_is_a_model_training_one(elsewhere: Path, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "home")
    workspace.ensure_writable(min_free_mb=0)
    tracker = Tracker(workspace)
    created = tracker.client.get_experiment(tracker.experiment_id("digits"))
    assert created.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert tracker.client.get_experiment("0").tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # An experiment made before mlaas tagged them is tagged when it is next used.
    untagged = tracker.client.create_experiment(
        "older", artifact_location=(workspace.mlflow_artifacts / "older").as_uri()
    )
    assert EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(untagged).tags
    assert tracker.experiment_id("older") == untagged
    tags = tracker.client.get_experiment(untagged).tags
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_flatten_joins_nested_keys_with_dots() -> None:
    assert flatten({"train": {"model": {"name": "cnn"}}, "seed": 1}) == {
        "train.model.name": "cnn",
        "seed": 1,
    }
