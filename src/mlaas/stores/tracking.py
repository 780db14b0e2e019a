"""Experiment tracking: the one place that writes runs, params, metrics and artifacts to MLflow.

The client is built from the workspace's tracking URI, never from process-wide state, so two
workspaces (a test's and the user's) cannot write into each other. Every experiment, MLflow's
Default one included, keeps its artifacts under the workspace: none lands in the folder a
command happens to run in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow.entities import ExperimentTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlaas.stores.model_registry import NOT_FOUND_CODES
from mlaas.stores.workspace import Workspace, check_tracking_uri

# MLflow refuses longer param values; settings that long are lists and are logged truncated.
_MAX_PARAM_LENGTH = 6000
# The experiment tag MLflow 3's UI reads to pick an experiment's first view (its JavaScript
# `ExperimentKind`; the Python package names it nowhere). Untagged experiments without runs
# open on the GenAI "Traces" view; model-training experiments open on their runs.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


@dataclass(frozen=True)
class RunSummary:
    """A run as `mlaas compare` lists it: its id, tags and latest metric values."""

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"model": {"name": "cnn"}}} -> {"train.model.name": "cnn"}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def tracking_client(workspace: Workspace) -> MlflowClient:
    """A client of the workspace's tracking store, creating the store first if it is a new
    SQLite file (a PostgreSQL database or a tracking server is set up by whoever runs it)."""
    check_tracking_uri(workspace.tracking_uri)
    database = workspace.tracking_db
    if database is not None and _is_new(database):
        create_store(workspace)
    return MlflowClient(tracking_uri=workspace.tracking_uri)


def _is_new(database: Path) -> bool:
    # Empty: SQLite makes the file on first connect, before MLflow creates any table in it.
    return not database.exists() or database.stat().st_size == 0


def create_store(workspace: Workspace) -> None:
    """Create the store's tables and its Default experiment (id 0) with artifacts under the
    workspace: a client creating them itself puts the Default experiment at `./mlruns/0` of
    the working folder, and MLflow never moves an experiment's artifact location."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(workspace.tracking_uri, workspace.mlflow_artifacts.as_uri())
    try:
        kind = ExperimentTag(EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        store.set_experiment_tag(store.DEFAULT_EXPERIMENT_ID, kind)
    finally:
        store.engine.dispose()


class Tracker:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.client = tracking_client(workspace)

    def experiment_id(self, name: str) -> str:
        """The experiment's id, creating it (under the workspace, as a training experiment)."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            # A tracking server keeps artifacts where it was told to (team mode proxies them,
            # `mlflow-artifacts:/`): a path on this machine would mean nothing to the others.
            served = urlsplit(self.workspace.tracking_uri).scheme in ("http", "https")
            location = None if served else (self.workspace.mlflow_artifacts / name).as_uri()
            kind = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
            return str(self.client.create_experiment(name, artifact_location=location, tags=kind))
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            # Made before mlaas tagged its experiments: tagged now, so its runs show first too.
            self.client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
            )
        return str(experiment.experiment_id)

    def start_run(
        self, experiment: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]
    ) -> str:
        run = self.client.create_run(
            self.experiment_id(experiment), run_name=run_name, tags=dict(tags)
        )
        run_id = str(run.info.run_id)
        entries = [
            Param(key, str(value)[:_MAX_PARAM_LENGTH]) for key, value in flatten(params).items()
        ]
        # log_batch takes at most 100 params per call.
        for start in range(0, len(entries), 100):
            self.client.log_batch(run_id, params=entries[start : start + 100])
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """All metrics in one request: one round trip per epoch, not one per number."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dict(self, run_id: str, data: Mapping[str, Any], file_name: str) -> None:
        self.client.log_dict(run_id, dict(data), file_name)

    def finish(self, run_id: str, succeeded: bool = True) -> None:
        self.client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED")

    def reopen(self, run_id: str) -> bool:
        """Mark a run as running again (a resumed training); False if it is gone or deleted."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code in NOT_FOUND_CODES:
                return False
            raise  # a store that does not answer cannot say the run is gone
        if run.info.lifecycle_stage != "active":
            return False
        self.client.update_run(run_id, status="RUNNING")
        return True

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def metric_history(self, run_id: str, name: str) -> list[tuple[int, float]]:
        """Every (step, value) logged under `name`, oldest first."""
        logged = self.client.get_metric_history(run_id, name)
        return [(m.step, m.value) for m in sorted(logged, key=lambda m: (m.timestamp, m.step))]

    def runs_tagged(self, key: str, value: str) -> list[RunSummary]:
        """Every run, in any experiment, whose tag `key` is `value`, newest first."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return []
        runs = self.client.search_runs(
            experiments,
            filter_string=f"tags.`{key}` = '{value}'",
            order_by=["attributes.start_time DESC"],
        )
        return [
            RunSummary(run.info.run_id, dict(run.data.tags), dict(run.data.metrics)) for run in runs
        ]
