"""Where state lives: everything under one folder, `$MLAAS_HOME` (default `.mlaas/`).

A user deletes the folder to start clean; a test points it at a temporary directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlaas.errors import SettingsError

DEFAULT_HOME = ".mlaas"


@dataclass(frozen=True)
class PipelinePaths:
    """The files one pipeline's stages read and write (the same paths `dvc.yaml` names)."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "data" / "dataset.parquet"

    @property
    def dataset_info(self) -> Path:
        return self.root / "data" / "dataset.json"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def validation_result(self) -> Path:
        return self.validation_dir / "result.json"

    @property
    def reference_profile(self) -> Path:
        # Outside validation/: DVC empties a stage's outputs before it runs, and this must stay.
        return self.root / "reference" / "profile.json"

    @property
    def validation_summary(self) -> Path:
        return self.validation_dir / "summary.json"

    @property
    def splits_dir(self) -> Path:
        return self.root / "data" / "splits"

    @property
    def splits_record(self) -> Path:
        return self.splits_dir / "splits.json"

    def split(self, name: str) -> Path:
        return self.splits_dir / f"{name}.parquet"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def checkpoints_dir(self) -> Path:
        return self.train_dir / "checkpoints"

    @property
    def model_dir(self) -> Path:
        return self.train_dir / "model"

    @property
    def training_result(self) -> Path:
        return self.train_dir / "training.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.evaluation_dir / "metrics.json"

    @property
    def evaluation_record(self) -> Path:
        return self.evaluation_dir / "evaluation.json"

    @property
    def registration(self) -> Path:
        return self.root / "registry" / "registration.json"

    @property
    def promotion(self) -> Path:
        return self.root / "registry" / "promotion.json"

    @property
    def manifest(self) -> Path:
        return self.root / "registry" / "manifest.json"

    @property
    def package_result(self) -> Path:
        return self.root / "package" / "package.json"


@dataclass(frozen=True)
class Workspace:
    """The state folder and the locations each service keeps inside it."""

    home: Path

    @classmethod
    def from_env(cls, home: Path | str | None = None) -> Workspace:
        """The folder `home`, else `$MLAAS_HOME`, else `.mlaas` in the current folder."""
        chosen = Path(home or os.environ.get("MLAAS_HOME") or DEFAULT_HOME).expanduser()
        return cls(chosen.resolve())

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.home / "mlflow-artifacts"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def prefect_results(self) -> Path:
        return self.prefect_home / "results"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    def pipeline(self, name: str) -> PipelinePaths:
        return PipelinePaths(self.home / "pipelines" / name)

    def environment(self) -> dict[str, str]:
        """Variables that point Prefect, MLflow, BentoML and GX at this workspace.

        They are read by those libraries when first imported, so the entry points (CLI, tests)
        apply them before importing anything else: nothing lands in the user's home by accident.
        """
        return {
            "MLAAS_HOME": str(self.home),
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_results),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "true",
            "GX_ANALYTICS_ENABLED": "false",
            # Pretrained weights come from installed packages; never reach for a model hub.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
        }

    def ensure_writable(self) -> None:
        """Create the state folder, or explain why it cannot be used, before any work starts."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as error:
            raise SettingsError(
                f"cannot write to MLAAS_HOME={self.home} ({error.strerror}); "
                "point MLAAS_HOME at a writable folder"
            ) from None


def apply_environment(workspace: Workspace) -> None:
    """Export the workspace's variables into this process (called once, at an entry point)."""
    os.environ.update(workspace.environment())
