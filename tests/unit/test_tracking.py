"""The tracking store keeps everything under $MLAAS_HOME unless MLAAS_TRACKING_URI names another
store (checked: SQLite, PostgreSQL or an MLflow server), and marks its experiments as model
training ones (so MLflow 3's UI opens them on their runs, not on its GenAI traces view)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient

from mlaas.core.errors import SettingsError
from mlaas.stores.registry import check_tracking_store
from mlaas.stores.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, Tracker, flatten
from mlaas.stores.workspace import TRACKING_URI_VARIABLE, Workspace


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


def test_the_default_store_is_the_sqlite_file_under_the_workspace(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    assert workspace.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert workspace.tracking_db == tmp_path / "mlflow.db"
    assert workspace.environment()[TRACKING_URI_VARIABLE] == ""  # a child builds the same


def test_a_store_named_by_uri_is_written_there_not_under_the_workspace(
    elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "shared" / "store" / "mlflow.db"
    monkeypatch.setenv(TRACKING_URI_VARIABLE, f"sqlite:///{database}")
    workspace = Workspace.from_env(tmp_path / "home")
    assert workspace.tracking_db == database
    # Child processes are given the same store.
    assert workspace.environment()[TRACKING_URI_VARIABLE] == f"sqlite:///{database}"
    assert workspace.environment()["MLFLOW_TRACKING_URI"] == f"sqlite:///{database}"
    workspace.ensure_writable(min_free_mb=0)
    check_tracking_store(workspace, "digits")
    tracker = Tracker(workspace)
    run_id = tracker.start_run("digits", "run", {}, {"seed": 1})
    tracker.log_metrics(run_id, {"test_accuracy": 0.5})
    assert database.is_file()
    assert not (workspace.home / "mlflow.db").exists()
    reader = MlflowClient(tracking_uri=f"sqlite:///{database}")
    assert reader.get_run(run_id).data.metrics == {"test_accuracy": 0.5}
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "uri",
    ["mysql://db.example/mlflow", "file:///tmp/mlruns", "sqlite://", "/tmp/mlflow.db", "http://"],
)
def test_a_tracking_uri_of_no_usable_store_is_refused_naming_the_variable(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRACKING_URI_VARIABLE, uri)
    workspace = Workspace.from_env(tmp_path / "home")
    refused = rf"{TRACKING_URI_VARIABLE}=.*sqlite:///.*postgresql"
    with pytest.raises(SettingsError, match=refused):
        workspace.ensure_writable(min_free_mb=0)  # the CLI's first check, before any work
    with pytest.raises(SettingsError, match=refused):
        Tracker(workspace)  # and before any MLflow client is made
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    "uri",
    [
        "postgresql://mlaas@db.example:5432/mlflow",
        "postgresql+psycopg2://mlaas@db.example/mlflow",
        "http://127.0.0.1:5000",
        "https://mlflow.example",
    ],
)
def test_postgresql_and_tracking_server_uris_are_accepted(uri: str, tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, uri)
    assert workspace.tracking_uri == uri
    assert workspace.tracking_db is None  # no SQLite file to create or check


def test_a_password_in_the_tracking_uri_is_never_shown(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, "postgresql://mlaas:s3cret@db.example/mlflow")
    assert workspace.tracking_location == "postgresql://mlaas:***@db.example/mlflow"
    with pytest.raises(SettingsError) as refused:
        Workspace(tmp_path, "mysql://mlaas:s3cret@db.example/mlflow").ensure_writable(0)
    assert "s3cret" not in str(refused.value)
