"""The records stages hand each other: small, typed, JSON on disk, and cache keys in Prefect.

Each stage writes its record beside its outputs. The Prefect flow passes them from task to task;
`mlaas stage NAME` (what `dvc.yaml` runs) reads them back from those files. Keeping them here,
apart from the stages, lets a stage import what it receives without importing who made it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class DatasetInfo(BaseModel):
    """A table on disk and its identity: downstream caches key on `content_hash`."""

    model_config = ConfigDict(frozen=True)

    path: Path
    content_hash: str
    rows: int
    dataset: str


class ValidationReport(BaseModel):
    """The gate's verdict on one data set, small enough to log and to key caches on."""

    model_config = ConfigDict(frozen=True)

    success: bool
    dataset_hash: str
    evaluated: int
    failures: list[str]
    result_path: Path
    docs_index: Path | None
    """The Data Docs page, built when the gate fails."""

    def summary(self) -> str:
        passed = self.evaluated - len(self.failures)
        return f"{passed}/{self.evaluated} expectations met"


class SplitInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    train: DatasetInfo
    val: DatasetInfo
    test: DatasetInfo


class TrainingResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    model_dir: Path
    model_hash: str
    epochs: int
    best_val_loss: float | None
    """None for models fitted in one go (scikit-learn)."""
    fit_seconds: float
    device: str
    resumed_from_epoch: int | None = None
    """Epochs a killed earlier attempt had finished, when this training resumed from them."""


class Evaluation(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    model_hash: str
    task: str
    metrics: dict[str, float]
    metrics_path: Path
    plots: list[Path]


class ModelVersionRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    run_id: str
    model_uri: str


class Registration(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: ModelVersionRef
    newly_registered: bool
    tags: dict[str, str]


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    promoted: bool
    alias: str
    reason: str
    metric: str
    candidate_value: float
    champion_version: int | None
    champion_value: float | None
    min_improvement: float


class Promotion(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: ModelVersionRef
    decision: Decision
    champion: ModelVersionRef
    decided_now: bool


class Packaged(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: ModelVersionRef
    model_tag: str
    bento_tag: str
    newly_built: bool
