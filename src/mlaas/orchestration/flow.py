"""The Prefect flow `training_pipeline`: every stage as a task, in order, cached by content.

Each task is a stage function of `mlaas.stages` as it is, `run(ctx, records…)`; `dvc.yaml` runs
the very same functions. A cached task's key is the params sections the stage reads (its entry in
`STAGE_TABLE`), the workspace, the content hashes in the records it receives, and the project's
source: a second run with the same data, params and code retrains nothing, and a change to a
section a stage does not read re-runs nothing of it. The rest of the context (the other
sections, the lineage, the logger) is not part of any key.

A task imports its stage's module when it runs, as `dvc repro` does: a stage that is a cache
hit costs no import (GX, torch, Lightning, Optuna: three of the five seconds the flow's imports
took in a run with nothing changed).
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import Task, flow, get_run_logger
from prefect.artifacts import Artifact
from prefect.cache_policies import INPUTS, NO_CACHE, CachePolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import Failed, State
from prefect.utilities.hashing import hash_objects

import mlaas
from mlaas.core.confidence import with_interval
from mlaas.core.errors import TrainingInterrupted
from mlaas.core.lineage import current_lineage, source_hash
from mlaas.core.records import (
    NO_SEARCH,
    DatasetInfo,
    Evaluation,
    Packaged,
    Registration,
    RunOutcome,
    SearchResult,
    SplitInfo,
    TrainingResult,
    ValidationReport,
    run_outcome_key,
)
from mlaas.core.settings import Settings, load_settings
from mlaas.core.trial_settings import rounded
from mlaas.families import check_settings
from mlaas.modeling.training_process import TrainingProcess
from mlaas.orchestration.gate_summary import publish_gate_summary
from mlaas.stages import promote, register
from mlaas.stages.context import StageContext
from mlaas.stages.table import STAGE_TABLE
from mlaas.stores.datasets import with_local_data
from mlaas.stores.locks import run_lock
from mlaas.stores.registry import check_tracking_store, naming_the_store
from mlaas.stores.workspace import Workspace, apply_missing_environment

if TYPE_CHECKING:
    from mlaas.stages.promote import Promotion

_PACKAGE_ROOT = Path(mlaas.__file__).resolve().parent
DEFAULT_PARAMS = "params.yaml"
# A killed trainer's memory is free again at once: waiting longer only delays the retry.
TRAIN_RETRY_DELAY_SECONDS = 2
_PARAMS_OF = {stage.name: stage.params for stage in STAGE_TABLE}


def stage_sections(settings: Settings, stage: str) -> dict[str, Any]:
    """The params sections `stage` reads (its `STAGE_TABLE` entry), as its cache key sees them."""
    params = settings.as_params()
    sections = {section: params[section] for section in _PARAMS_OF[stage]}
    if stage in ("train", "tune"):
        # `train.retries` changes no model: more or fewer retries retrain nothing.
        sections["train"] = settings.train.what_is_trained()
    return sections


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


@dataclass(kw_only=True)
class StageSettings(CachePolicy):
    """Keys a stage on what it reads of its context: its params sections and the workspace."""

    stage: str

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        ctx = inputs.get("ctx")
        if not isinstance(ctx, StageContext):
            raise TypeError(f"the {self.stage} task takes its StageContext as `ctx`")
        return hash_objects(
            stage_sections(ctx.settings, self.stage), ctx.workspace, raise_on_failure=True
        )


def by_content(stage: str) -> CachePolicy:
    """A stage's cache key: its sections and workspace, its records, the project's source."""
    return (INPUTS - "ctx") + StageSettings(stage=stage) + ProjectSource()


def stage_task(stage: str, name: str, cached: bool = False) -> Task[..., Any]:
    """The stage function `stage` ("module:function") as the task `name`, imported when the
    task runs; a cached one keeps its result (`by_content`)."""
    function = imported_when_run(stage, name)
    if not cached:
        # No key at all: Prefect's default one would hash the context, which holds a process.
        return Task(function, name=name, cache_policy=NO_CACHE)
    return Task(function, name=name, cache_policy=by_content(name), persist_result=True)


def imported_when_run(stage: str, name: str) -> Callable[..., Any]:
    """`stage` ("module:function"), imported at its first call, with MLflow's own errors (its
    server or database gone mid-run, after its client's retries) raised as the
    TrackingStoreUnavailable that names the store, the stage and what to do, rather than a
    transport error's chain of tracebacks."""
    module, function = stage.split(":")

    def run(ctx: StageContext, *records: Any) -> Any:
        stage_function = getattr(importlib.import_module(module), function)
        with naming_the_store(ctx.workspace, f"failed during the {name} stage"):
            return stage_function(ctx, *records)

    # Prefect keys a task by its function's name and code: the code is every stage's, the name
    # this one's.
    run.__name__ = run.__qualname__ = name
    return run


def trainer_was_killed(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a training whose process died (it resumes from its checkpoint), not an error that
    would only happen again."""
    return isinstance(state.result(raise_on_failure=False), TrainingInterrupted)


# load reads the data source anew each run: its content hash is what the later keys hold.
load_task: Task[[StageContext], DatasetInfo] = stage_task("mlaas.stages.load:run", "load")
# A failed gate is a report, not an exception: the flow stops on it without a traceback.
validate_task: Task[[StageContext, DatasetInfo], ValidationReport] = stage_task(
    "mlaas.stages.validate:check", "validate", cached=True
)
split_task: Task[[StageContext, DatasetInfo, ValidationReport], SplitInfo] = stage_task(
    "mlaas.stages.split:run", "split", cached=True
)
# The search's trials are tasks of a subflow it starts (`search_flow`); the search is cached
# like the stages around it: the same data, settings and code search nothing again.
tune_task: Task[[StageContext, SplitInfo], SearchResult] = stage_task(
    "mlaas.orchestration.search_flow:tune_with_tasks", "tune", cached=True
)
# `retries` comes from the settings (`train.retries`): the flow sets it with `with_options`.
train_task: Task[[StageContext, SplitInfo, SearchResult], TrainingResult] = stage_task(
    "mlaas.stages.train:run", "train", cached=True
).with_options(retry_condition_fn=trainer_was_killed, retry_delay_seconds=TRAIN_RETRY_DELAY_SECONDS)
evaluate_task: Task[[StageContext, TrainingResult, SplitInfo], Evaluation] = stage_task(
    "mlaas.stages.evaluate:run", "evaluate", cached=True
)
# register, promote and package are idempotent by themselves (they look in the registry and the
# Bento store first), so they are not cached: they always report the registry's current state.
register_task: Task[[StageContext, register.Upstream], Registration] = stage_task(
    "mlaas.stages.register:run", "register"
)
promote_task: Task[[StageContext, promote.Candidate], Promotion] = stage_task(
    "mlaas.stages.promote:run", "promote"
)
package_task: Task[[StageContext], Packaged] = stage_task("mlaas.stages.package:run", "package")


def serve_command(params: str | dict[str, Any]) -> str:
    """The command that serves what a run with this params file packaged."""
    if isinstance(params, dict):
        return "make serve PARAMS=<the pipeline's params file>"
    if Path(params) == Path(DEFAULT_PARAMS):
        return "make serve"
    return f"make serve PARAMS={shlex.quote(params)}"


def record_outcome(outcome: RunOutcome) -> None:
    """Keep what the run ended with as a `result` artifact of it on the Prefect server, where
    `GET /runs/{id}` reads it (and the UI shows it), whichever machine ran it."""
    Artifact(
        type="result",
        key=run_outcome_key(outcome.pipeline),
        description=f"what this run of mlaas pipeline {outcome.pipeline} ended with",
        data=outcome.model_dump(mode="json"),
    ).create()


@flow(name="training_pipeline")
def training_pipeline(
    params: str | dict[str, Any] = DEFAULT_PARAMS,
    home: str | None = None,
    overrides: dict[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Load, validate, split, train, evaluate, register, promote and package one pipeline.

    `params`: a params file, or its document (a team-mode deployment's, for a worker on any
    machine); `home`: the workspace, else the worker's `$MLAAS_HOME`. `overrides` change the
    settings for this run only (`{"train": {"max_epochs": 3}}`); `reason` says why it was
    started. A data set that fails the validation gate ends the run Failed, with
    ValidationFailed as its result (what calling the flow raises)."""
    logger = get_run_logger()
    settings = load_settings(params, overrides)
    check_settings(settings)
    if reason:
        logger.info("started because: %s", reason)
    workspace = Workspace.from_env(home)
    apply_missing_environment(workspace)
    workspace.ensure_writable()
    # Before any work: a tracking store that cannot be written stops the run here, not after
    # training.
    check_tracking_store(workspace, settings.pipeline.name)
    # An uploaded data set, fetched from the shared store when it came from another machine;
    # its columns are checked once it is here.
    local = with_local_data(settings, workspace)
    if local is not settings:
        check_settings(local)
    settings = local
    ctx = StageContext(settings, workspace, given_lineage=current_lineage(settings.as_params()))
    # Runs of one pipeline take turns (they share its work folder), whoever starts them: the
    # deployment's own runs queue by its concurrency limit, and this also holds a `mlaas run`
    # and a deployment's run apart.
    with run_lock(workspace, settings.pipeline.name), trainer_ahead(settings) as trainer:
        return _run_stages(replace(ctx, trainer=trainer), params, reason, overrides)


@contextmanager
def trainer_ahead(settings: Settings) -> Iterator[TrainingProcess | None]:
    """For a network, its training process, started now: the seconds it spends importing torch
    and Lightning pass while load, validate and split run. Ended with the run when the train
    stage did not use it (a cache hit, a refused data set). Not for a search, whose trials train
    in processes of their own while this one would only wait."""
    if not settings.train.model.trained_by_lightning or settings.tune.trials:
        yield None
        return
    trainer = TrainingProcess.start()
    try:
        yield trainer
    finally:
        trainer.close()


def _run_stages(
    ctx: StageContext,
    params: str | dict[str, Any],
    reason: str | None,
    overrides: dict[str, Any] | None,
) -> dict[str, Any] | State[Any]:
    logger = get_run_logger()
    settings, pipeline = ctx.settings, ctx.pipeline

    dataset = load_task(ctx)
    validation = validate_task(ctx, dataset)
    publish_gate_summary(pipeline, validation)
    asked = {"pipeline": pipeline.name, "reason": reason, "overrides": overrides or {}}
    if not validation.success:
        record_outcome(RunOutcome(**asked, refused_by_gate=validation.summary()))
        # Returned, not raised: Prefect logs a raised error's traceback at each level it crosses.
        from mlaas.stages.validate import refusal  # GX: imported when the gate refuses

        return Failed(
            message=f"validation gate failed: {validation.summary()}",
            data=refusal(validation, dataset.dataset),
        )
    logger.info("validation gate passed: %s", validation.summary())
    splits = split_task(ctx, dataset, validation)
    search = tune_task(ctx, splits) if settings.tune.trials else NO_SEARCH
    if search.trials:
        logger.info(
            "search %s: best trial %s, %s=%s with %s (%s)",
            search.study,
            search.best_trial,
            search.metric,
            search.best_value,
            rounded(search.best_values),
            search.counts(),
        )
    training_state = train_task.with_options(retries=settings.train.retries)(
        ctx, splits, search, return_state=True
    )
    training = training_state.result()
    retrained = training_state.name != "Cached"
    if retrained and training.resumed_from_epoch is not None:
        logger.info(
            "resumed from the checkpoint after epoch %d of a killed attempt; %d epochs in all",
            training.resumed_from_epoch,
            training.epochs,
        )
    evaluation = evaluate_task(ctx, training, splits)
    registration = register_task(
        ctx, register.Upstream(dataset, validation, splits, training, evaluation)
    )
    promotion = promote_task(
        ctx, promote.Candidate(registration, dataset, validation, evaluation, splits, search)
    )
    packaged = package_task(ctx)

    decision = promotion.decision
    if retrained:
        logger.info(
            "trained %s v%d: %s -> alias %r (%s)",
            pipeline.name,
            registration.version.version,
            with_interval(evaluation.metrics, decision.metric),
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
    record_outcome(
        RunOutcome(
            **asked,
            retrained=retrained,
            version=registration.version,
            decision=decision,
            champion_version=promotion.champion.version,
            metrics=evaluation.metrics,
            bento=packaged.bento_tag,
        ),
    )
    return {
        "retrained": retrained,
        "version": registration.version.version,
        "alias": decision.alias,
        "champion_version": promotion.champion.version,
        "metrics": evaluation.metrics,
        "bento": packaged.bento_tag,
    }
