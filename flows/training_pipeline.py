"""The Prefect flow `training_pipeline`: every stage as a task, in order, cached by content.

Tasks only wrap the stage functions of `mlaas`; `dvc.yaml` runs the very same functions. A task's
cache key is its inputs (settings sections, the content hashes in the records it receives) plus
the project's source, so a second run with the same data, params and code retrains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, CachePolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State
from prefect.utilities.hashing import hash_objects

from mlaas import evaluate, load, package, promote, register, split, train, validate
from mlaas.errors import TrainingInterrupted, ValidationFailed
from mlaas.families import check_settings
from mlaas.lineage import Lineage, current_lineage, source_hash
from mlaas.records import DatasetInfo, Evaluation, SplitInfo, TrainingResult, ValidationReport
from mlaas.registry import check_tracking_store
from mlaas.settings import (
    EvaluateSettings,
    LoadSettings,
    PipelineSettings,
    SplitSettings,
    TrainSettings,
    ValidateSettings,
    load_settings,
)
from mlaas.workspace import Workspace

_PACKAGE_ROOT = Path(load.__file__).resolve().parent


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
    try:
        return validate.run(pipeline, load_cfg, cfg, workspace, dataset)
    except ValidationFailed as failure:
        create_markdown_artifact(
            key=f"{pipeline.name}-validation",
            markdown=f"# Validation gate failed\n\n```\n{failure}\n```\n",
            description="Great Expectations gate: why the data set was refused",
        )
        raise


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
def training_pipeline(params: str = "params.yaml", home: str | None = None) -> dict[str, Any]:
    """Load, validate, split, train, evaluate, register, promote and package one pipeline."""
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
            "trained %s v%d: %s=%.4f -> alias %r (%s)",
            pipeline.name,
            registration.version.version,
            metric,
            evaluation.metrics[metric],
            decision.alias,
            decision.reason,
        )
    else:
        logger.info("nothing changed (same data, params and code): no retraining")
    logger.info(
        "champion: %s v%d; Bento %s (serve it with `make serve`)",
        pipeline.name,
        promotion.champion.version,
        packaged.bento_tag,
    )
    return {
        "retrained": retrained,
        "version": registration.version.version,
        "alias": decision.alias,
        "champion_version": promotion.champion.version,
        "metrics": evaluation.metrics,
        "bento": packaged.bento_tag,
    }
