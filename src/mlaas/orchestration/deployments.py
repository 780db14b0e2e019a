"""The deployments' runner that `mlaas up` starts: one `training_pipeline` deployment per params
file, on its `deploy` schedule, served by this process (`prefect.serve`) against the Prefect
server of `PREFECT_API_URL`.

    python -m mlaas.orchestration.deployments --home HOME --params P [--params P2 ...]

Each deployment's parameters (the params file, the workspace) show in the Prefect UI; one run
per pipeline at a time (`concurrency_limit=1`): a run due while another runs waits its turn.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from mlaas.core.errors import MlaasError
from mlaas.core.settings import load_settings
from mlaas.families import check_settings
from mlaas.orchestration.flow import training_pipeline


def deployment_for(params: Path, home: Path) -> RunnerDeployment:
    """The pipeline of `params` as a deployment named after it, on its schedule."""
    settings = load_settings(params)
    check_settings(settings)
    schedule = settings.deploy
    every = schedule.every_seconds
    return RunnerDeployment.from_flow(
        training_pipeline,
        name=settings.pipeline.name,
        interval=timedelta(seconds=every) if every is not None else None,
        cron=schedule.cron,
        parameters={"params": str(params.resolve()), "home": str(home)},
        concurrency_limit=1,
        description=f"mlaas pipeline {settings.pipeline.name} ({settings.pipeline.family})",
        tags=["mlaas", settings.pipeline.family],
        # By module, not by file path: the runner finds the flow wherever mlaas is installed.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlaas.orchestration.deployments")
    parser.add_argument("--home", required=True, help="the workspace ($MLAAS_HOME)")
    parser.add_argument("--params", action="append", required=True, help="a params file")
    args = parser.parse_args(argv)
    try:
        deployments = [deployment_for(Path(p), Path(args.home)) for p in args.params]
    except MlaasError as error:
        print(f"mlaas: error: {error}", file=sys.stderr)
        return 2
    serve(*deployments, print_starting_message=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
