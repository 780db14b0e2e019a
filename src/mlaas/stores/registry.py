"""The model registry: the one module that reads and writes MLflow registered models and aliases.

`MlflowRegistry` serves any MLflow store the workspace names (a SQLite file, PostgreSQL, a
tracking server over http); it is one `ModelRegistry` (mlaas.stores.model_registry).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mlaas.core.errors import TrackingStoreUnavailable
from mlaas.core.lineage import package_versions
from mlaas.core.records import ModelVersionRef
from mlaas.stores.locks import TRACKING_STORE_LOCK, tracking_store_lock
from mlaas.stores.model_registry import CHALLENGER as CHALLENGER
from mlaas.stores.model_registry import CHAMPION as CHAMPION
from mlaas.stores.model_registry import NOT_FOUND_CODES
from mlaas.stores.model_registry import ModelRegistry as ModelRegistry
from mlaas.stores.model_registry import ServedExample as ServedExample
from mlaas.stores.tracking import Tracker, tracking_client
from mlaas.stores.tracking_server import is_tracking_server, probe_tracking_server
from mlaas.stores.workspace import Workspace

# A registered-model tag: the versions that became champion, oldest first (what rollback undoes).
CHAMPION_HISTORY_TAG = "mlaas.champion_history"
MODEL_ARTIFACT = "model"
# The logged model's metadata entry holding the JSON schema of what its `predict` takes.
INSTANCES_SCHEMA_KEY = "mlaas.instances_schema"
# The packages a logged model needs to be loaded elsewhere (`mlflow models serve`, pyfunc).
RUNTIME_PACKAGES = (
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "scikit-learn",
    "skops",
    "mlflow",
)
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# How long the check waits for another process's write to the store before calling it locked.
_STORE_BUSY_SECONDS = 30.0


def describe_store(workspace: Workspace) -> str:
    return f"MLflow tracking store at {workspace.tracking_location}"


def check_tracking_store(workspace: Workspace, experiment: str | None = None) -> None:
    """A real round trip to the tracking store before any work, so a store that is missing,
    damaged or read-only stops the run at once with a message naming it.

    It also creates the store's tables and `experiment` (if given) when they are new, under the
    store's lock: two runs started at once on a fresh `$MLAAS_HOME` would otherwise both
    create them, and one would fail (MLflow's schema set-up is not safe between processes).
    The SQLite checks run only for a SQLite store; a tracking server is first asked once,
    without MLflow's minutes of retries (`mlaas.stores.tracking_server`); another store is
    checked by the round trip.
    """
    if is_tracking_server(workspace.tracking_uri):
        probe_tracking_server(workspace.tracking_uri)
    with tracking_store_lock(
        workspace, TRACKING_STORE_LOCK, "setting up the MLflow tracking store"
    ):
        if workspace.tracking_db is not None:
            _check_sqlite_writable(workspace, workspace.tracking_db)
        try:
            if experiment is not None:
                Tracker(workspace).experiment_id(experiment)
            tracking_client(workspace).search_registered_models(max_results=1)
        except MlflowException as error:
            raise store_error(workspace, "cannot be used", error) from None


def _check_sqlite_writable(workspace: Workspace, path: Path) -> None:
    """Open the database and take its write lock: proves it is a database this process can
    write (file permissions do not stop root; an immutable file or a read-only mount does)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a store named by MLAAS_TRACKING_URI
        connection = sqlite3.connect(path, timeout=_STORE_BUSY_SECONDS, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            # A write of the value already there, rolled back: refused when the file is read-only.
            user_version = connection.execute("PRAGMA user_version").fetchone()[0]
            connection.execute(f"PRAGMA user_version = {int(user_version)}")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
    except (sqlite3.Error, OSError) as error:
        raise TrackingStoreUnavailable(
            f"{describe_store(workspace)} cannot be used ({error}): {path} must be a writable "
            "SQLite database. If it is read-only (chattr +i, a read-only mount), make it "
            "writable; if it was damaged or replaced, restore it from a backup or move it away "
            "to start an empty registry; or point MLAAS_HOME at another folder. Nothing was run."
        ) from None


def store_error(workspace: Workspace, what: str, error: Exception) -> TrackingStoreUnavailable:
    """A tracking store failure as a message that names the store and says what to do."""
    cause = error.message if isinstance(error, MlflowException) else str(error)
    if is_tracking_server(workspace.tracking_uri):
        what_to_do = (
            "Check that the tracking server and its database are up (team mode: `mlaas status` "
            "on the stack's machine; `mlaas up --team` starts what stopped), then run again"
        )
    else:
        what_to_do = (
            "Check that the store is reachable and writable (for the local store: the file "
            "exists, is a SQLite database and is not read-only), then run again"
        )
    shown = _short_cause(cause.splitlines()[0]) if cause else repr(error)
    return TrackingStoreUnavailable(f"{describe_store(workspace)} {what}: {shown}. {what_to_do}.")


@contextmanager
def naming_the_store(workspace: Workspace, what: str) -> Iterator[None]:
    """MLflow's own errors inside the block (its server or database gone, after its client's
    retries) raised as the `store_error` that names the store, `what` failed and what to do,
    instead of a transport error's chain of tracebacks. (Its artifact transfers through a
    server's proxy raise `requests`' errors instead.)"""
    import requests

    try:
        yield
    except (MlflowException, requests.RequestException) as error:
        raise store_error(workspace, what, error) from error


_RETRIES_RAN_OUT = re.compile(
    r"API request to \S+?(/api/\S+) failed .*too many (\d+) error responses"
)


def _short_cause(message: str) -> str:
    """MLflow's transport errors nest the reason in three layers of repr: the request and the
    status are what a user can act on."""
    ran_out = _RETRIES_RAN_OUT.search(message)
    if ran_out:
        return f"it answered {ran_out[2]} to {ran_out[1]}, every time its client retried"
    if "Connection refused" in message:
        return f"{message.split(' failed with exception')[0]} failed: connection refused"
    return message[:600]


class MlflowRegistry:
    """The registry of the workspace's MLflow store, whichever kind of store its URI names."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.client = tracking_client(workspace)

    def _ref(self, version: ModelVersion) -> ModelVersionRef:
        return ModelVersionRef(
            name=version.name,
            version=int(version.version),
            run_id=str(version.run_id),
            model_uri=f"models:/{version.name}/{version.version}",
        )

    def version_of_run(self, name: str, run_id: str) -> ModelVersionRef | None:
        """The version already registered from this run, so registering again is a no-op."""
        try:
            found = self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        except MlflowException as error:
            if error.error_code in NOT_FOUND_CODES:
                return None
            raise  # "not registered" from a registry that did not answer would register twice
        return self._ref(min(found, key=lambda v: int(v.version))) if found else None

    def register(
        self,
        name: str,
        run_id: str,
        model_dir: Path,
        example: ServedExample,
        tags: Mapping[str, str],
    ) -> ModelVersionRef:
        """Log the model folder as a pyfunc model on the run and register a new version of it.

        The pyfunc takes and answers what the endpoint does. Its signature describes the
        predictions and leaves the input undeclared: MLflow would enforce a declared one before
        the model's own checks and refuse what the endpoint accepts (uint8 arrays, nested lists,
        records with nulls). The instances' JSON schema is in the model's metadata instead, and
        the input example is a valid `instances` list.
        """
        versions = package_versions(RUNTIME_PACKAGES)
        # log_model only has a fluent form: point it at this workspace's store explicitly.
        mlflow.set_tracking_uri(self.workspace.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                # Models from code: the wrapper is our source file, not a pickled object.
                python_model=str(_PACKAGE_ROOT / "modeling" / "pyfunc_model.py"),
                artifacts={MODEL_ARTIFACT: str(model_dir)},
                code_paths=[str(_PACKAGE_ROOT)],
                signature=infer_signature(model_input=None, model_output=example.predictions),
                input_example=example.instances,
                metadata={INSTANCES_SCHEMA_KEY: example.instances_schema},
                # Explicit requirements: inferring them imports the model in a subprocess.
                pip_requirements=[f"{package}=={versions[package]}" for package in versions],
            )
        if not self.client.search_registered_models(f"name='{name}'"):
            self.client.create_registered_model(name, tags={"mlaas.pipeline": name})
        version = self.client.create_model_version(
            name, source=logged.model_uri, run_id=run_id, tags=dict(tags), model_id=logged.model_id
        )
        return self._ref(version)

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self.client.get_model_version(name, str(version)).tags)

    def set_version_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)

    def champion(self, name: str) -> ModelVersionRef | None:
        return self.version_with_alias(name, CHAMPION)

    def version_with_alias(self, name: str, alias: str) -> ModelVersionRef | None:
        """The version `alias` names; None when the model or alias does not exist. Any other
        failure (the server or its database away) is raised: "no champion" must never be
        what an unreachable registry looks like, or a run would promote against nothing."""
        try:
            return self._ref(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as error:
            if error.error_code in NOT_FOUND_CODES:
                return None
            raise

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def delete_version_tag(self, name: str, version: int, key: str) -> None:
        self.client.delete_model_version_tag(name, str(version), key)

    def delete_version(self, name: str, version: int) -> None:
        """Remove a version (MLflow keeps its number: the next version does not reuse it)."""
        self.client.delete_model_version(name, str(version))

    def has_model(self, name: str) -> bool:
        return bool(self.client.search_registered_models(f"name='{name}'"))

    def versions(self, name: str) -> list[int]:
        """The version numbers of `name` that exist (deleted ones are not listed), ascending."""
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(int(version.version) for version in found)

    def champion_history(self, name: str) -> list[int] | None:
        """The versions that became champion, oldest first; None where it was never recorded."""
        recorded = self.client.get_registered_model(name).tags.get(CHAMPION_HISTORY_TAG)
        return [int(version) for version in json.loads(recorded)] if recorded else None

    def set_champion_history(self, name: str, history: list[int]) -> None:
        self.client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, json.dumps(history))

    def aliases(self, name: str) -> dict[str, int]:
        model = self.client.get_registered_model(name)
        return {alias: int(version) for alias, version in model.aliases.items()}

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def run_json(self, run_id: str, artifact_path: str) -> dict[str, Any]:
        """A JSON artifact logged with a run (the manifest, say)."""
        with tempfile.TemporaryDirectory() as scratch:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=artifact_path,
                dst_path=scratch,
                tracking_uri=self.workspace.tracking_uri,
            )
            return dict(json.loads(Path(local).read_text()))

    def download_model_dir(self, ref: ModelVersionRef, destination: Path) -> Path:
        """Copy the version's model folder (card and weights) to `destination`."""
        with tempfile.TemporaryDirectory() as scratch:
            downloaded = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=ref.model_uri,
                    dst_path=scratch,
                    tracking_uri=self.workspace.tracking_uri,
                )
            )
            shutil.rmtree(destination, ignore_errors=True)
            shutil.copytree(downloaded / "artifacts" / MODEL_ARTIFACT, destination)
        return destination


# The name the stages and tests build the registry by (`Registry(workspace)`); code that only
# uses a registry it is given types it as `ModelRegistry`, so the in-memory fake fits too.
Registry = MlflowRegistry
