"""The model registry: the one module that reads and writes MLflow registered models and aliases."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from mlaas.lineage import package_versions
from mlaas.records import ModelVersionRef
from mlaas.workspace import Workspace

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"
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
_PACKAGE_ROOT = Path(__file__).resolve().parent


class Registry:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.client = MlflowClient(tracking_uri=workspace.tracking_uri)

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
        except MlflowException:
            return None
        return self._ref(min(found, key=lambda v: int(v.version))) if found else None

    def register(
        self,
        name: str,
        run_id: str,
        model_dir: Path,
        input_example: Any,
        output_example: np.ndarray,
        tags: Mapping[str, str],
    ) -> ModelVersionRef:
        """Log the model folder as a pyfunc model on the run and register a new version of it."""
        versions = package_versions(RUNTIME_PACKAGES)
        # log_model only has a fluent form: point it at this workspace's store explicitly.
        mlflow.set_tracking_uri(self.workspace.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                # Models from code: the wrapper is our source file, not a pickled object.
                python_model=str(_PACKAGE_ROOT / "pyfunc_model.py"),
                artifacts={MODEL_ARTIFACT: str(model_dir)},
                code_paths=[str(_PACKAGE_ROOT)],
                signature=infer_signature(input_example, output_example),
                input_example=input_example,
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

    def version_with_alias(self, name: str, alias: str) -> ModelVersionRef | None:
        try:
            return self._ref(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.client.set_registered_model_alias(name, alias, str(version))

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
