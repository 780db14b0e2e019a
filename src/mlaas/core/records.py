"""The records stages hand each other: small, typed, JSON on disk, and cache keys in Prefect.

Each stage writes its record beside its outputs. The Prefect flow passes them from task to task;
`mlaas stage NAME` (what `dvc.yaml` runs) reads them back from those files. Keeping them here,
apart from the stages, lets a stage import what it receives without importing who made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class DatasetInfo(BaseModel):
    """A table on disk and its identity: downstream caches key on `content_hash`."""

    model_config = ConfigDict(frozen=True)

    path: Path
    content_hash: str
    rows: int
    dataset: str


class GateCheck(BaseModel):
    """One expectation of the gate as a person reads it: the rule, what was seen, who sets it."""

    model_config = ConfigDict(frozen=True)

    expectation: str
    """Great Expectations' name of the check (the full report and Data Docs use it)."""
    column: str | None
    rule: str
    """What the data must be, in words: "at least 100 rows"."""
    observed: str
    """What the data is: "90 rows", "3 of 120 values are missing, e.g. [...]"."""
    passed: bool
    setting: str | None
    """The params key that sets the rule, to change when the rule is wrong for this data; None
    when no setting does (only the data can change)."""

    def explain(self) -> str:
        """One line: the setting (or the column), the rule, the observed value."""
        subject = ", ".join(
            part for part in (self.setting, self.column and f"column {self.column!r}") if part
        )
        fix = "" if self.setting else " (no setting allows this: fix the data)"
        return f"{subject or 'the data set'}: expected {self.rule}; observed {self.observed}{fix}"


class ValidationReport(BaseModel):
    """The gate's verdict on one data set, small enough to log and to key caches on."""

    model_config = ConfigDict(frozen=True)

    success: bool
    dataset_hash: str
    evaluated: int
    checks: list[GateCheck]
    result_path: Path
    docs_index: Path | None
    """The Data Docs page, built when the gate fails."""

    @property
    def failures(self) -> list[str]:
        return [check.explain() for check in self.checks if not check.passed]

    def summary(self) -> str:
        passed = self.evaluated - len(self.failures)
        return f"{passed}/{self.evaluated} expectations met"


class SplitInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    train: DatasetInfo
    val: DatasetInfo
    test: DatasetInfo


TrialState = Literal["complete", "pruned", "failed", "skipped"]
TRIAL_STATES: tuple[TrialState, ...] = ("complete", "pruned", "failed", "skipped")


class TrialResult(BaseModel):
    """One trial of a search: what it tried and how it ended."""

    model_config = ConfigDict(frozen=True)

    number: int | None
    """Optuna's trial number; None for a trial skipped because the search's time was up."""
    state: TrialState
    value: float | None = None
    """The validation metric it reached (complete trials)."""
    values: dict[str, Any] = {}
    run_id: str | None = None
    """Its MLflow run, nested under the pipeline's training run."""
    error: str | None = None


class SearchResult(BaseModel):
    """A hyperparameter search (`tune:`): its study, its trials, and the settings that won."""

    model_config = ConfigDict(frozen=True)

    trials: int
    """Trials asked for; 0: no search, the settings as given are trained."""
    metric: str = ""
    higher_is_better: bool = True
    study: str = ""
    storage: str = ""
    run_id: str | None = None
    """The pipeline's training run, which the trials' runs are nested under and which the
    winning settings are then trained into."""
    outcomes: list[TrialResult] = []
    best_trial: int | None = None
    best_value: float | None = None
    best_values: dict[str, Any] = {}
    """The winning trial's values of the searched settings."""
    seconds: float = 0.0

    def count(self, state: TrialState) -> int:
        return sum(outcome.state == state for outcome in self.outcomes)

    def counts(self) -> str:
        """`6 complete, 2 pruned, 0 failed, 0 skipped`."""
        return ", ".join(f"{self.count(state)} {state}" for state in TRIAL_STATES)

    def summary(self) -> dict[str, Any]:
        """What the manifest and the run's outcome say of the search."""
        return {
            "trials": self.trials,
            **{state: self.count(state) for state in TRIAL_STATES},
            "metric": self.metric,
            "best_trial": self.best_trial,
            "best_value": self.best_value,
            "best_values": self.best_values,
            "study": self.study,
            "storage": self.storage,
            "seconds": self.seconds,
        }


NO_SEARCH = SearchResult(trials=0)


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
    search: SearchResult = NO_SEARCH
    """The search whose winning settings were trained (`tune.trials > 0`)."""


class Evaluation(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    model_hash: str
    task: str
    metrics: dict[str, float]
    metrics_path: Path
    plots: list[Path]
    test_rows: int | None = None
    """Rows of the test split the metrics come from (None in records from before it was kept)."""


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
    """What promotion decided for one version, and the figures it decided on."""

    model_config = ConfigDict(frozen=True)

    promoted: bool
    alias: str
    reason: str
    metric: str
    candidate_value: float
    champion_version: int | None
    champion_value: float | None
    """The champion's figure the candidate was compared with: measured on the candidate's test
    split when `compared_on` names it, else the champion's own recorded figure."""
    min_improvement: float
    # The rest is set only when the two versions were tested on different rows (the data
    # changed); defaults let decisions recorded before these fields existed still parse.
    compared_on: str | None = None
    """The split both figures were measured on ("the candidate's test split"); None when each
    figure is the version's own recorded one."""
    compared_on_rows: int | None = None
    compared_on_hash: str | None = None
    candidate_ci_low: float | None = None
    candidate_ci_high: float | None = None
    champion_ci_low: float | None = None
    champion_ci_high: float | None = None
    champion_own_value: float | None = None
    """The champion's recorded figure on its own test split, beside `champion_value`."""
    rescoring_failed: str | None = None
    """Why the champion could not be scored on the candidate's (different) test split, so the
    decision fell back to each version's own figure."""


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


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key of `parts` (`"breast_cancer", "outcome"` ->
    `breast-cancer-outcome`): keys are lowercase letters, digits and dashes only."""
    return "-".join("".join(c if c.isalnum() else "-" for c in part.lower()) for part in parts)


def run_outcome_key(pipeline: str) -> str:
    """The key of a pipeline's run outcomes: the Prefect UI keeps their history under it."""
    return artifact_key(pipeline, "outcome")


class RunOutcome(BaseModel):
    """What one run of a deployment ended with (`GET /runs/{id}` reads it): the version it
    registered and what promotion decided, or why the validation gate stopped it. Kept on the
    Prefect server, as an artifact of the run (`run_outcome_key`): whichever machine's worker
    ran it, the control API finds it there."""

    model_config = ConfigDict(frozen=True)

    pipeline: str
    reason: str | None = None
    overrides: dict[str, Any] = {}
    retrained: bool | None = None
    version: ModelVersionRef | None = None
    decision: Decision | None = None
    champion_version: int | None = None
    metrics: dict[str, float] = {}
    bento: str | None = None
    refused_by_gate: str | None = None
    """The validation gate's summary, for a run whose data it refused."""
