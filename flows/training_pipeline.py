"""The Prefect flow `training_pipeline`: every stage as a task, in order, cached by content.

Tasks only wrap the stage functions of `mlaas`; `dvc.yaml` runs the very same functions. A task's
cache key is its inputs (settings sections, the content hashes in the records it receives) plus
the project's source, so a second run with the same data, params and code retrains nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import INPUTS, CachePolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import Failed, State
from prefect.utilities.hashing import hash_objects

import mlaas
from mlaas.core.confidence import with_interval
from mlaas.core.errors import TrainingInterrupted
from mlaas.core.lineage import Lineage, current_lineage, source_hash
from mlaas.core.records import DatasetInfo, Evaluation, SplitInfo, TrainingResult, ValidationReport
from mlaas.core.settings import (
    EvaluateSettings,
    LoadSettings,
    PipelineSettings,
    SplitSettings,
    TrainSettings,
    ValidateSettings,
    load_settings,
)
from mlaas.families import check_settings
from mlaas.stages import evaluate, load, package, promote, register, split, train, validate
from mlaas.stores.registry import check_tracking_store
from mlaas.stores.workspace import Workspace

_PACKAGE_ROOT = Path(mlaas.__file__).resolve().parent
DEFAULT_PARAMS = "params.yaml"


@dataclass
class ProjectSource(CachePolicy):
    """Adds the hash of mlaas's source to a cache key: changed code means a fresh result."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return source_hash(_PACKAGE_ROOT)


@dataclass
class WhatIsTrained(CachePolicy):
    """Keys training on its settings less `train.retries`, which changes no model."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return hash_objects(inputs["cfg"].what_is_trained(), raise_on_failure=True)


BY_CONTENT = INPUTS + ProjectSource()
# Lineage (git commit, package versions) describes a run; it does not change what training makes.
TRAINING_BY_CONTENT = (INPUTS - "lineage" - "cfg") + WhatIsTrained() + ProjectSource()
# A killed trainer's memory is free again at once: waiting longer only delays the retry.
TRAIN_RETRY_DELAY_SECONDS = 2


@task(name="load")
def load_task(pipeline: PipelineSettings, cfg: LoadSettings, workspace: Workspace) -> DatasetInfo:
    return load.run(pipeline, cfg, workspace)


@task(name="validate", cache_policy=BY_CONTENT, persist_result=True)
def validate_task(
    pipeline: PipelineSettings,
    load_cfg: LoadSettings,
    cfg: ValidateSettings,
    workspace: Workspace,
    dataset: DatasetInfo,
) -> ValidationReport:
    # A failed gate is a report, not an exception: the flow stops on it without a traceback.
    return validate.check(pipeline, load_cfg, cfg, workspace, dataset)


def gate_summary_key(pipeline: PipelineSettings) -> str:
    """The Prefect artifact key of a pipeline's gate summary (keys allow no underscores)."""
    return f"{pipeline.name.replace('_', '-')}-validation"


def gate_summary_rows(report: ValidationReport) -> list[dict[str, Any]]:
    """The gate's checks as the rows of a table: each expectation, its rule, what was seen."""
    return [
        {
            "passed": check.passed,
            "expectation": check.expectation,
            "column": check.column or "",
            "rule": check.rule,
            "observed": check.observed,
            "setting": check.setting or "",
        }
        for check in report.checks
    ]


def publish_gate_summary(pipeline: PipelineSettings, report: ValidationReport) -> None:
    """The gate's summary as a Prefect table artifact of this run, passed or failed (and also
    when the validate task's result came from the cache)."""
    verdict = "passed" if report.success else "FAILED"
    create_table_artifact(
        key=gate_summary_key(pipeline),
        table=gate_summary_rows(report),
        description=(
            f"Validation gate {verdict}: {report.summary()}. Full report: {report.result_path}"
        ),
    )


def serve_command(params: str) -> str:
    """The command that serves what a run with this params file packaged."""
    if Path(params) == Path(DEFAULT_PARAMS):
        return "make serve"
    return f"make serve PARAMS={shlex.quote(params)}"


@task(name="split", cache_policy=BY_CONTENT, persist_result=True)
def split_task(
    pipeline: PipelineSettings,
    load_cfg: LoadSettings,
    cfg: SplitSettings,
    workspace: Workspace,
    dataset: DatasetInfo,
    validation: ValidationReport,
) -> SplitInfo:
    return split.run(pipeline, load_cfg, cfg, workspace, dataset, validation)


def trainer_was_killed(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a training whose process died (it resumes from its checkpoint), not an error that
    would only happen again."""
    return isinstance(state.result(raise_on_failure=False), TrainingInterrupted)


# `retries` comes from the settings (`train.retries`): the flow sets it with `with_options`.
@task(
    name="train",
    cache_policy=TRAINING_BY_CONTENT,
    persist_result=True,
    retry_condition_fn=trainer_was_killed,
    retry_delay_seconds=TRAIN_RETRY_DELAY_SECONDS,
)
def train_task(
    pipeline: PipelineSettings,
    load_cfg: LoadSettings,
    cfg: TrainSettings,
    workspace: Workspace,
    splits: SplitInfo,
    lineage: Lineage,
) -> TrainingResult:
    result = train.run(pipeline, load_cfg, cfg, workspace, splits, lineage)
    if result.resumed_from_epoch is not None:
        get_run_logger().info(
            "resumed from the checkpoint after epoch %d of a killed attempt; %d epochs in all",
            result.resumed_from_epoch,
            result.epochs,
        )
    return result


@task(name="evaluate", cache_policy=BY_CONTENT, persist_result=True)
def evaluate_task(
    pipeline: PipelineSettings,
    split_cfg: SplitSettings,
    train_cfg: TrainSettings,
    cfg: EvaluateSettings,
    workspace: Workspace,
    training: TrainingResult,
    splits: SplitInfo,
) -> Evaluation:
    return evaluate.run(pipeline, split_cfg, train_cfg, cfg, workspace, training, splits)


# register, promote and package are idempotent by themselves (they look in the registry and the
# Bento store first), so they are not cached: they always report the registry's current state.
register_task = task(name="register")(register.run)
promote_task = task(name="promote")(promote.run)
package_task = task(name="package")(package.run)


@flow(name="training_pipeline")
def training_pipeline(
    params: str = DEFAULT_PARAMS, home: str | None = None
) -> dict[str, Any] | State[Any]:
    """Load, validate, split, train, evaluate, register, promote and package one pipeline.

    A data set that fails the validation gate ends the run Failed, with ValidationFailed as its
    result (what calling the flow raises)."""
    logger = get_run_logger()
    settings = load_settings(params)
    check_settings(settings)
    workspace = Workspace.from_env(home)
    workspace.ensure_writable()
    # Before any work: a tracking store that cannot be written stops the run here, not after
    # training.
    check_tracking_store(workspace, settings.pipeline.name)
    lineage = current_lineage(settings.as_params())
    pipeline = settings.pipeline

    dataset = load_task(pipeline, settings.load, workspace)
    validation = validate_task(pipeline, settings.load, settings.validate_, workspace, dataset)
    publish_gate_summary(pipeline, validation)
    if not validation.success:
        # Returned, not raised: Prefect logs a raised error's traceback at each level it crosses.
        return Failed(
            message=f"validation gate failed: {validation.summary()}",
            data=validate.refusal(validation, dataset.dataset),
        )
    logger.info("validation gate passed: %s", validation.summary())
    splits = split_task(pipeline, settings.load, settings.split, workspace, dataset, validation)
    training_state = train_task.with_options(retries=settings.train.retries)(
        pipeline, settings.load, settings.train, workspace, splits, lineage, return_state=True
    )
    training = training_state.result()
    retrained = training_state.name != "Cached"
    evaluation = evaluate_task(
        pipeline, settings.split, settings.train, settings.evaluate, workspace, training, splits
    )
    registration = register_task(
        pipeline, workspace, dataset, validation, splits, training, evaluation, lineage
    )
    promotion = promote_task(
        pipeline,
        settings.promote,
        settings.evaluate,
        workspace,
        dataset,
        validation,
        evaluation,
        registration,
        lineage,
    )
    packaged = package_task(pipeline, settings.package, settings.serve, workspace)

    decision = promotion.decision
    metric = decision.metric
    if retrained:
        logger.info(
            "trained %s v%d: %s -> alias %r (%s)",
            pipeline.name,
            registration.version.version,
            with_interval(evaluation.metrics, metric),
            decision.alias,
            decision.reason,
        )
    else:
        logger.info("nothing changed (same data, params and code): no retraining")
    logger.info(
        "champion: %s v%d; Bento %s (serve it with `%s`)",
        pipeline.name,
        promotion.champion.version,
        packaged.bento_tag,
        serve_command(params),
    )
    return {
        "retrained": retrained,
        "version": registration.version.version,
        "alias": decision.alias,
        "champion_version": promotion.champion.version,
        "metrics": evaluation.metrics,
        "bento": packaged.bento_tag,
    }
