"""One check of a served model by the `monitor` flow: what it compared, what it found, what it
did about it. Written as the pipeline's `drift.json` (and kept, one line per check, in its
history), shown by `GET /pipelines/{name}` and `mlaas status`, rendered as the HTML report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from mlaas.core.drift import DatasetDrift, FeatureDrift, LiveQuality


class Window(BaseModel):
    """The prediction log records a check looked at."""

    model_config = ConfigDict(frozen=True)

    records: int
    first: float | None
    """Unix seconds of the oldest record (None for an empty window)."""
    last: float | None


class Flagged(BaseModel):
    model_config = ConfigDict(frozen=True)

    out_of_contract: int
    out_of_distribution: int


class Retraining(BaseModel):
    """What the check decided about retraining, and why."""

    model_config = ConfigDict(frozen=True)

    wanted: bool
    reason: str
    started: Literal["started", "cooling_down", "not_wanted", "failed"]
    run_id: str | None = None
    """The `training_pipeline` flow run it started."""
    feedback_rows: int = 0
    """Labelled production records added to the data it learns from."""


class MonitorCheck(BaseModel):
    """The outcome of one check (`drift.json`)."""

    model_config = ConfigDict(frozen=True)

    pipeline: str
    model_version: int
    model_tag: str
    checked_at: float
    window: Window
    data: DatasetDrift
    """Each input feature (and the embedding, for texts and images) against the training rows."""
    prediction: FeatureDrift
    """The answers against the test split's answers."""
    quality: LiveQuality | None
    """On the answers that got feedback; None for a model whose task has no live metric."""
    champion_metric: float | None
    """The served version's test figure of the same metric."""
    quality_fell: bool
    flagged: Flagged
    drifted: bool
    retraining: Retraining
    report: str | None = None
    """Where the HTML report is (a file path; the MLflow run holds a copy)."""
    mlflow_run_id: str | None = None
