"""A hyperparameter search's trials as Prefect tasks: the subflow `hyperparameter_search`.

The `tune` task starts it with the task runner `tune:` asks for: one trial at a time in a
thread, or prefect-dask's `DaskTaskRunner` on a LocalCluster (`tune.parallel` threads or worker
processes: `dask_cluster_options`), or on the running cluster at `tune.dask_address`. Each trial
is a task run (`trial-N`, shown in the UI under the subflow); a trial whose worker died is a
failed trial, not a failed search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import Task, flow, get_client
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mlaas.core.records import SearchResult, SplitInfo, TrialResult
from mlaas.core.search_space import TuneSettings
from mlaas.modeling.tuning import TrialRequest, dask_cluster_options, run_trial
from mlaas.stages import tune
from mlaas.stages.context import StageContext

trial_task = Task(run_trial, name="trial", task_run_name="trial-{request.slot}")


@flow(name="hyperparameter_search")
def hyperparameter_search(requests: list[TrialRequest]) -> list[TrialResult]:
    """Every trial submitted at once: the task runner starts as many as it has room for."""
    futures = [trial_task.submit(request) for request in requests]
    results = []
    for future in futures:
        result = future.result(raise_on_failure=False)
        if isinstance(result, TrialResult):
            results.append(result)
        else:  # its worker died, or the task crashed before it could answer
            results.append(
                TrialResult(number=None, state="failed", error=f"{future.state.name}: {result}")
            )
    return results


def task_runner_for(tune: TuneSettings, own_training_process: bool) -> TaskRunner[Any]:
    """A thread for one trial at a time; Dask for more (see the module's docstring)."""
    if tune.parallel == 1 and tune.dask_address is None:
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if tune.dask_address is not None:
        return DaskTaskRunner(address=tune.dask_address)
    # The workers report their task runs to this flow's API: the local one a `mlaas run` started
    # in this process is known only here, not from the environment the workers inherit.
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    options = dask_cluster_options(tune, {"PREFECT_API_URL": api_url}, own_training_process)
    return DaskTaskRunner(cluster_kwargs=options)


def trials_as_tasks(
    requests: Sequence[TrialRequest], tune: TuneSettings, own_training_process: bool
) -> list[TrialResult]:
    """The `tune` stage's `TrialRunner` in the flow."""
    runner = task_runner_for(tune, own_training_process)
    search = hyperparameter_search.with_options(task_runner=runner)
    return search(list(requests))


def tune_with_tasks(ctx: StageContext, splits: SplitInfo) -> SearchResult:
    """Stage `tune`, its trials as Prefect tasks."""
    return tune.run(ctx, splits, run_trials=trials_as_tasks)
