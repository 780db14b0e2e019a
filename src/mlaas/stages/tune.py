"""Stage `tune`: with `tune.trials > 0`, a hyperparameter search whose winner `train` then fits.

The search is one Optuna study in the workspace's study storage (`mlaas.stores.studies`), named
by what is searched (model, settings, space, data and code): a search cut off part-way and run
again goes on with the trials it had. Its trials run through the driver's `TrialRunner`: the
Prefect flow makes each one a task on a Dask cluster; `mlaas stage tune` (DVC) runs them on the
same cluster without Prefect. Each trial is an MLflow run nested under the pipeline's training
run, which this stage starts and `train` then trains the winning settings into.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mlaas.core.errors import SettingsError
from mlaas.core.records import NO_SEARCH, SearchResult, SplitInfo, TrialResult
from mlaas.core.search_space import TuneSettings
from mlaas.core.tasks import task_of
from mlaas.core.trial_settings import SearchedKey, rounded, search_space_of, searched_keys
from mlaas.modeling.fitting import trains_in_own_process
from mlaas.modeling.tuning import TrialRequest, run_trials_here, threads_per_trial
from mlaas.stages.context import StageContext
from mlaas.stages.train_run import start_training_run
from mlaas.stores.files import read_table, write_json
from mlaas.stores.studies import open_study, study_location, study_storage
from mlaas.stores.tracking import Tracker

if TYPE_CHECKING:
    import optuna


class TrialRunner(Protocol):
    """Runs the trials, at most `tune.parallel` at once, and answers each one's result;
    `own_training_process`: each trial's model trains in a process of its own (a network)."""

    def __call__(
        self, requests: Sequence[TrialRequest], tune: TuneSettings, own_training_process: bool
    ) -> list[TrialResult]: ...


FINISHED_STATES = ("COMPLETE", "PRUNED")


def study_name(ctx: StageContext, splits: SplitInfo) -> str:
    """The pipeline's name and a hash of what the search is over: the same search, the same
    study (resumed); any change to the model, its settings, the space, the data or the code, a
    new one."""
    settings = ctx.settings
    content = {
        "train": settings.train.what_is_trained(),
        "tune": settings.tune.model_dump(mode="json", exclude={"trials", "timeout_s", "parallel"}),
        "space": {n: d.model_dump(mode="json") for n, d in search_space_of(settings).items()},
        "data": [splits.train.content_hash, splits.val.content_hash],
        "code": ctx.lineage.code_version,
        "seed": settings.pipeline.seed,
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return f"{settings.pipeline.name}-{digest[:16]}"


def run(
    ctx: StageContext, splits: SplitInfo, run_trials: TrialRunner | None = None
) -> SearchResult:
    settings, paths, workspace = ctx.settings, ctx.paths, ctx.workspace
    tune = settings.tune
    if tune.trials == 0:
        write_json(NO_SEARCH, paths.search_record)
        return NO_SEARCH
    import optuna

    keys = searched_keys(settings)
    train_table = read_table(splits.train.path, "split")
    card = ctx.family.model_card(train_table, settings.load, settings.train.model)
    task = task_of(card)
    metric = task.validation_metric
    higher_is_better = task.metrics(settings.evaluate)[metric].higher_is_better
    name = study_name(ctx, splits)
    started = time.time()
    optuna.create_study(
        study_name=name,
        storage=study_storage(workspace, paths.tune_dir),
        direction="maximize" if higher_is_better else "minimize",
        load_if_exists=True,
    )
    study = open_study(workspace, paths.tune_dir, name, tune, settings.pipeline.seed)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED_STATES]
    tracker = Tracker(workspace)
    run_id = start_training_run(ctx, card, extra_tags={"mlaas.study": name})
    ctx.log.info(
        "tune: %d trials of %s (%d already in study %s), %d at a time, on %s",
        tune.trials,
        sorted(k.name for k in keys),
        len(finished),
        name,
        tune.parallel,
        tune.dask_address or ("a local Dask cluster" if tune.parallel > 1 else "this process"),
    )
    deadline = started + tune.timeout_s if tune.timeout_s is not None else None
    requests = [
        TrialRequest(
            slot=slot,
            params=settings.as_params(),
            study=name,
            home=workspace.home,
            store_uri=workspace.store_uri,
            tune_dir=paths.tune_dir,
            splits=splits,
            parent_run_id=run_id,
            metric=metric,
            deadline=deadline,
            threads=threads_per_trial(tune),
        )
        for slot in range(len(finished), tune.trials)
    ]
    try:
        own_process = trains_in_own_process(ctx.family, card)
        outcomes = (run_trials or run_trials_here)(requests, tune, own_process)
        best = _best_trial(study, outcomes)
    except BaseException:
        tracker.finish(run_id, succeeded=False)
        raise
    result = SearchResult(
        trials=tune.trials,
        metric=metric,
        higher_is_better=higher_is_better,
        study=name,
        storage=study_location(workspace, paths.tune_dir),
        run_id=run_id,
        outcomes=outcomes,
        best_trial=best.number,
        best_value=best.value,
        best_values={key.name: _value(key, best.params[key.name]) for key in keys},
        seconds=round(time.time() - started, 3),
    )
    tracker.log_metrics(
        run_id,
        {
            "search_best_value": float(best.value or 0.0),
            **{f"search_{s}": result.count(s) for s in ("complete", "pruned", "failed")},
        },
    )
    tracker.set_tags(
        run_id,
        {f"mlaas.tuned.{n}": json.dumps(v) for n, v in rounded(result.best_values).items()},
    )
    tracker.finish(run_id)
    ctx.log.info(
        "tune: best trial %d, %s=%.4f with %s (%s)",
        best.number,
        metric,
        best.value,
        rounded(result.best_values),
        result.counts(),
    )
    write_json(result, paths.search_record)
    return result


def _value(key: SearchedKey, stored: Any) -> Any:
    """A setting's value from what Optuna stored (a list choice is stored as its JSON)."""
    return key.value(stored) if hasattr(key.dimension, "choices") else stored


def _best_trial(study: optuna.Study, outcomes: list[TrialResult]) -> optuna.trial.FrozenTrial:
    """The study's best trial (earlier runs of the same search included); a clear error when
    none completed."""
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        errors = sorted({o.error for o in outcomes if o.error})
        raise SettingsError(
            f"tune: no trial of the search completed ({len(outcomes)} run: "
            f"{', '.join(sorted({o.state for o in outcomes})) or 'none'}); "
            f"the trials' errors: {errors[:3] or 'none'}. Widen tune.timeout_s, or change "
            "tune.search_space"
        )
    return study.best_trial
