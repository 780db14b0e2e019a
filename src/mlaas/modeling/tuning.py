"""One trial of a hyperparameter search, wherever it runs (a Dask worker, this process).

`run_trial` asks the shared study for a trial, lays the values Optuna suggests over the
pipeline's settings, fits them as a nested MLflow run under the pipeline's training run, and
tells the study how it ended. A pruned trial is tagged `pruned` and its run ended FINISHED (not
left FAILED); a trial that crashes is told FAIL and answered as `failed`: neither fails the
search. Networks fit in their own training process (`fitting.fit_in_training_process`), which
reports each epoch to the pruner through a `TrialLink`.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlaas.core.errors import TrialWasPruned
from mlaas.core.records import SplitInfo, TrialResult
from mlaas.core.search_space import TuneSettings
from mlaas.core.settings import Settings, parse_settings
from mlaas.core.trial_settings import SearchedKey, rounded, searched_keys, with_trial_values
from mlaas.families import get_family
from mlaas.modeling.fitting import (
    FitReport,
    FitRequest,
    fit_in_training_process,
    fit_model,
    trains_in_own_process,
)
from mlaas.modeling.trial_link import TrialLink
from mlaas.stores.files import read_table
from mlaas.stores.studies import open_study
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import LOCK_URI_VARIABLE, Workspace

if TYPE_CHECKING:
    import optuna

_logger = logging.getLogger(__name__)
PARENT_RUN_TAG = "mlflow.parentRunId"  # what makes MLflow show a run nested under another
TRIAL_STATE_TAG = "mlaas.trial_state"
TRIAL_PROCESS_TAG = "mlaas.trial_process"


class TrialRequest(BaseModel):
    """What a trial needs, with no secret in it: each process finds its stores itself."""

    model_config = ConfigDict(frozen=True)

    slot: int
    """Its place in the search (0, 1, ...): seeds its sampler, names its scratch folder."""
    params: dict[str, Any]
    """The pipeline's settings, as `params.yaml` spells them."""
    study: str
    home: Path
    store_uri: str | None
    tune_dir: Path
    splits: SplitInfo
    parent_run_id: str
    metric: str
    deadline: float | None
    """No trial starts after this time (seconds since the epoch)."""
    threads: int | None = None
    """CPU threads for a network's training (None: all): the cores shared by the trials run at
    once on this machine's local cluster."""


def suggest(trial: optuna.Trial, keys: list[SearchedKey]) -> dict[str, Any]:
    """The trial's value of each searched setting, drawn by the study's sampler."""
    values: dict[str, Any] = {}
    for key in keys:
        dimension = key.dimension
        if hasattr(dimension, "choices"):
            categories = [key.category(choice) for choice in dimension.choices]
            values[key.name] = key.value(trial.suggest_categorical(key.name, categories))
        elif key.whole:
            step = int(dimension.step or 1)
            values[key.name] = trial.suggest_int(
                key.name, int(dimension.low), int(dimension.high), step=step, log=dimension.log
            )
        else:
            values[key.name] = trial.suggest_float(
                key.name, dimension.low, dimension.high, step=dimension.step, log=dimension.log
            )
    return values


def run_trial(request: TrialRequest) -> TrialResult:
    """Ask, fit, tell: one trial (see the module's docstring)."""
    import optuna

    if request.deadline is not None and time.time() > request.deadline:
        return TrialResult(number=None, state="skipped")
    # The team's study database from this process's own environment: no password travels.
    workspace = Workspace(request.home, request.store_uri, os.environ.get(LOCK_URI_VARIABLE))
    settings = parse_settings(request.params, source="the search's settings")
    keys = searched_keys(settings)
    study = open_study(
        workspace,
        request.tune_dir,
        request.study,
        settings.tune,
        seed=settings.pipeline.seed + request.slot,
    )
    trial = study.ask()
    values = suggest(trial, keys)
    tracker = Tracker(workspace)
    pipeline = settings.pipeline.name
    run_id = tracker.start_run(
        experiment=pipeline,
        run_name=f"{pipeline}-trial-{trial.number}",
        tags={
            PARENT_RUN_TAG: request.parent_run_id,
            "mlaas.pipeline": pipeline,
            "mlaas.study": request.study,
            "mlaas.trial": str(trial.number),
            # Which process ran it: trials spread over Dask workers, on one machine or several.
            TRIAL_PROCESS_TAG: f"{socket.gethostname()}:{os.getpid()}",
        },
        params=values,
    )
    scratch = request.tune_dir / "trials" / str(trial.number)
    try:
        report = _fit(request, with_trial_values(settings, keys, values), trial, scratch, run_id)
    except TrialWasPruned as pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        tracker.set_tags(run_id, {TRIAL_STATE_TAG: "pruned", "pruned": "true"})
        tracker.finish(run_id)
        _logger.info("trial %d %s pruned: %s", trial.number, rounded(values), pruned)
        return TrialResult(number=trial.number, state="pruned", values=values, run_id=run_id)
    except Exception as error:
        # One trial's crash (a setting its model cannot train with, a killed process) is that
        # trial's outcome; the search goes on with the others.
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.set_tags(run_id, {TRIAL_STATE_TAG: "failed", "mlaas.error": str(error)[:500]})
        tracker.finish(run_id, succeeded=False)
        _logger.warning("trial %d %s failed: %s", trial.number, rounded(values), error)
        return TrialResult(
            number=trial.number, state="failed", values=values, run_id=run_id, error=str(error)
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    value = report.val_metrics[request.metric]
    tracker.log_metrics(
        run_id, {**report.val_metrics, "fit_seconds": report.fit_seconds, "epochs": report.epochs}
    )
    tracker.set_tags(run_id, {TRIAL_STATE_TAG: "complete"})
    study.tell(trial, value)
    tracker.finish(run_id)
    _logger.info("trial %d %s: %s=%.4f", trial.number, rounded(values), request.metric, value)
    return TrialResult(
        number=trial.number, state="complete", value=value, values=values, run_id=run_id
    )


def _fit(
    request: TrialRequest,
    settings: Settings,
    trial: optuna.Trial,
    scratch: Path,
    run_id: str,
) -> FitReport:
    family = get_family(settings.pipeline.family)
    train_table = read_table(request.splits.train.path, "split")
    card = family.model_card(train_table, settings.load, settings.train.model).model_copy(
        update={"seed": settings.pipeline.seed}
    )
    if not trains_in_own_process(family, card):
        _, report = fit_model(
            family,
            card,
            train_table,
            read_table(request.splits.val.path, "split"),
            settings.train,
            scratch / "checkpoints",
        )
        return report
    return fit_in_training_process(
        FitRequest(
            family=family.name,
            card=card,
            cfg=settings.train,
            home=request.home,
            store_uri=request.store_uri,
            run_id=run_id,
            train_split=request.splits.train.path,
            val_split=request.splits.val.path,
            test_split=request.splits.test.path,
            checkpoints=scratch / "checkpoints",
            resume_from=None,
            model_dir=scratch / "model",
            threads=request.threads,
            trial=TrialLink(
                study=request.study,
                trial_id=trial._trial_id,
                tune_dir=request.tune_dir,
                monitor=request.metric,
                tune=settings.tune,
            ),
        )
    )


def dask_cluster_options(
    tune: TuneSettings, environment: dict[str, str], own_training_process: bool
) -> dict[str, Any]:
    """A LocalCluster that runs `tune.parallel` trials at once.

    Trials that fit in the worker (scikit-learn) need worker processes, one thread each, or
    they would take turns behind one GIL; `environment` is added to what each one inherits (the
    flow's Prefect API). Trials whose network trains in a training process of its own (networks)
    only wait on it, so threads of one worker in this process are enough: no worker process
    starts and imports mlaas (about 10 s of the search, and 10 to 20 CPU-s each, on 2 cores)."""
    common: dict[str, Any] = {"dashboard_address": ":0", "silence_logs": logging.WARNING}
    if own_training_process:
        return {**common, "n_workers": 1, "threads_per_worker": tune.parallel, "processes": False}
    return {
        **common,
        "n_workers": tune.parallel,
        "threads_per_worker": 1,
        "processes": True,
        "env": environment,
    }


def threads_per_trial(tune: TuneSettings) -> int | None:
    """This machine's cores shared out among the trials its local cluster runs at once; None
    for trials on a cluster elsewhere (its machines' cores are not known here)."""
    if tune.dask_address is not None or tune.parallel == 1:
        return None
    return max(1, (os.cpu_count() or 1) // tune.parallel)


def run_trials_here(
    requests: Sequence[TrialRequest], tune: TuneSettings, own_training_process: bool
) -> list[TrialResult]:
    """The trials without Prefect (`mlaas stage tune`): in this process one after the other, or
    on Dask (a local cluster, or `tune.dask_address`)."""
    if tune.parallel == 1 and tune.dask_address is None:
        return [run_trial(request) for request in requests]
    from distributed import Client, LocalCluster

    with (
        LocalCluster(**dask_cluster_options(tune, {}, own_training_process))
        if tune.dask_address is None
        else nullcontext(tune.dask_address) as cluster,
        Client(cluster) as client,
    ):
        futures = client.map(run_trial, list(requests), pure=False)
        return [_result_or_failed(future) for future in futures]


def _result_or_failed(future: Any) -> TrialResult:
    """A trial's result; a trial whose worker died (KilledWorker) as a failed one."""
    try:
        result = future.result()
    except Exception as error:
        return TrialResult(number=None, state="failed", error=f"{type(error).__name__}: {error}")
    assert isinstance(result, TrialResult)
    return result
