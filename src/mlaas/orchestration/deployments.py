"""The deployments' runner that `mlaas up` starts: per pipeline, a `training_pipeline`
deployment on its `deploy` schedule and a `monitor` deployment every `monitor.interval_seconds`,
run by this process against the Prefect server of `PREFECT_API_URL`.

    python -m mlaas.orchestration.deployments --home HOME [--params P ...] [--work-pool POOL]

With `--work-pool` (team mode) it runs nothing itself: it registers the deployments with that
`process` pool (made if missing), and the pool's workers run them, on this machine or others:
a training run carries its params document and uses its worker's own `$MLAAS_HOME`, and says
what it ended with on the Prefect server; the checks (`monitor`) and the retrainings they start
go to the `stack` queue, which only this machine's workers take (they read its files); an
uploaded data set is fetched from the shared store (`mlaas.stores.datasets`).

It deploys the params files it is given, and every pipeline created over the control API
(`$MLAAS_HOME/catalog/`): those already there when it starts, and each new one within
`--watch-seconds`, without a restart (a restart would cancel the runs in progress). Each
deployment's parameters (the params file, the workspace) show in the Prefect UI; one run per
pipeline at a time (`concurrency_limit=1`): a run due while another runs waits its turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.exceptions import PrefectException
from prefect.runner import Runner

from mlaas.core.errors import MlaasError
from mlaas.core.settings import Settings, load_settings, read_params
from mlaas.families import check_settings
from mlaas.orchestration.flow import training_pipeline
from mlaas.orchestration.heartbeats import ensure_silent_run_detection
from mlaas.orchestration.monitor_flow import monitor
from mlaas.stores.catalog import Catalog
from mlaas.stores.workspace import Workspace

DEFAULT_WATCH_SECONDS = 2.0


def say(message: str) -> None:
    # Printed, not logged: Prefect configures the logging of the process it runs in.
    print(f"mlaas deployments: {message}", file=sys.stderr, flush=True)


# Team mode: the work queue of the runs that read files only the stack's machine holds (the
# model servers' prediction logs a check reads, the feedback rows a retraining learns from).
# The stack's own workers poll every queue of the pool; another machine's take `default`.
STACK_QUEUE = "stack"


def deployments_for(
    params: Path, home: Path, work_pool: str | None = None
) -> list[RunnerDeployment]:
    """The pipeline of `params` as its two deployments, each named after it; with `work_pool`
    (team mode), for that pool's workers."""
    settings = load_settings(params)
    check_settings(settings)
    return [
        deployment_of(settings, params, home, work_pool),
        monitor_deployment_of(settings, params, home, work_pool),
    ]


async def ensure_work_pool(name: str) -> None:
    """The `process` work pool the team's workers poll, made if it is not there yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
            return
        except ObjectNotFound:
            pass
        template = ProcessWorker.get_default_base_job_template()
        with contextlib.suppress(ObjectAlreadyExists):  # made meanwhile by someone else
            await client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )


def monitor_deployment_of(
    settings: Settings, params: Path, home: Path, work_pool: str | None = None
) -> RunnerDeployment:
    """The pipeline's `monitor` deployment: a check of its champion every interval, on this
    machine (the model servers' prediction logs are here)."""
    return RunnerDeployment.from_flow(
        monitor,
        name=settings.pipeline.name,
        interval=timedelta(seconds=settings.monitor.interval_seconds),
        parameters={"params": str(params.resolve()), "home": str(home)},
        work_queue_name=STACK_QUEUE if work_pool is not None else None,
        concurrency_limit=1,
        description=f"drift and live quality of mlaas pipeline {settings.pipeline.name}'s champion",
        tags=["mlaas", "monitor", settings.pipeline.family],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


# The settings that name a file or folder.
PATH_SETTINGS = (("load", "path"), ("package", "bentofile"), ("package", "build_context"))


def portable(document: dict[str, Any], project: Path) -> dict[str, Any]:
    """`document` with the paths inside the `project` folder made relative to it: a worker on
    another machine finds them in its own checkout, where it starts its runs."""
    moved = copy.deepcopy(document)
    for section, key in PATH_SETTINGS:
        values = moved.get(section)
        if isinstance(values, dict) and isinstance(values.get(key), str):
            path = Path(values[key])
            if path.is_absolute() and path.is_relative_to(project):
                values[key] = str(path.relative_to(project))
    return moved


def deployment_of(
    settings: Settings, params: Path, home: Path, work_pool: str | None = None
) -> RunnerDeployment:
    """The deployment of checked settings. Its runs read them from `params` in this `home`;
    with `work_pool` (team mode), a worker on any machine runs them, so they carry the params
    document itself and use the worker's own workspace (its `$MLAAS_HOME`)."""
    schedule = settings.deploy
    every = schedule.every_seconds
    parameters: dict[str, Any] = (
        {"params": str(params.resolve()), "home": str(home)}
        if work_pool is None
        else {"params": portable(read_params(params), Path.cwd())}
    )
    return RunnerDeployment.from_flow(
        training_pipeline,
        name=settings.pipeline.name,
        interval=timedelta(seconds=every) if every is not None else None,
        cron=schedule.cron,
        parameters=parameters,
        concurrency_limit=1,
        description=f"mlaas pipeline {settings.pipeline.name} ({settings.pipeline.family})",
        tags=["mlaas", settings.pipeline.family],
        # By module, not by file path: the runner finds the flow wherever mlaas is installed.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def for_workers(deployment: RunnerDeployment) -> RunnerDeployment:
    """`deployment`, made for a work pool's workers: each starts a run in the folder it was
    started in, as the runner does in the one `mlaas up` ran in, where the params' relative
    paths point, in each machine's own checkout (Prefect's default: a new temporary folder)."""
    deployment.job_variables = {"working_dir": "."}
    return deployment


def created_over_the_api(workspace: Workspace) -> dict[str, Path]:
    """The catalog's pipelines created over the API: name -> params file."""
    return {
        entry.name: Path(entry.params)
        for entry in Catalog(workspace).entries()
        if entry.added_by == "api"
    }


async def serve_catalog(
    workspace: Workspace,
    given: list[RunnerDeployment],
    watch_seconds: float,
    work_pool: str | None = None,
) -> None:
    """Run `given` and the API's pipelines, adding each new one as it appears; with
    `work_pool` (team mode), register them with that pool for its workers to run instead."""
    runner = Runner(pause_on_shutdown=True) if work_pool is None else None
    try:
        await ensure_silent_run_detection()
    except (PrefectException, httpx.HTTPError) as error:  # the runs still run without it
        say(
            "a run cut off from the server will stay Running there: the automation that marks "
            f"it Crashed could not be made ({type(error).__name__}: {error})"
        )
    if work_pool is not None:
        await ensure_work_pool(work_pool)
    served: set[str] = set()

    async def add(deployments: list[RunnerDeployment]) -> None:
        for deployment in deployments:
            if runner is not None:
                await runner.aadd_deployment(deployment)
            else:
                await for_workers(deployment).aapply(work_pool_name=work_pool)
            served.add(deployment.name)  # the pipeline's name: both its deployments have it

    async def add_new_pipelines() -> None:
        for name, params in created_over_the_api(workspace).items():
            if name in served:
                continue
            served.add(name)  # tried once: a broken one is logged, not retried every poll
            try:
                await add(deployments_for(params, workspace.home, work_pool))
            except Exception as error:  # one broken pipeline must not stop the others' runs
                say(f"pipeline {name} is not deployed: {type(error).__name__}: {error}")
                continue
            say(f"deployed pipeline {name} (created over the API)")

    await add(given)
    await add_new_pipelines()
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while True:
                await anyio.sleep(watch_seconds)
                await add_new_pipelines()

        group.start_soon(watch)
        if runner is not None:
            await runner.start()  # returns once SIGTERM (`mlaas down`) stopped it
            group.cancel_scope.cancel()
        # With a work pool, the watch runs until SIGTERM ends the process.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlaas.orchestration.deployments")
    parser.add_argument("--home", required=True, help="the workspace ($MLAAS_HOME)")
    parser.add_argument("--params", action="append", default=[], help="a params file")
    parser.add_argument("--watch-seconds", type=float, default=DEFAULT_WATCH_SECONDS)
    parser.add_argument(
        "--work-pool", help="register the deployments with this pool for its workers (team mode)"
    )
    args = parser.parse_args(argv)
    workspace = Workspace.from_env(args.home)
    try:
        given = [
            d for p in args.params for d in deployments_for(Path(p), workspace.home, args.work_pool)
        ]
    except MlaasError as error:
        print(f"mlaas: error: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve_catalog(workspace, given, args.watch_seconds, args.work_pool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
