"""The `mlaas` command: the edge where settings are read and errors become messages.

    mlaas run   [--params P]              the Prefect flow `training_pipeline`
    mlaas stage NAME [--params P]         one stage (what `dvc.yaml` runs)
    mlaas repro [--params P]              `dvc repro` the pipeline's stages, then `dvc push`
    mlaas dvc-yaml [--check]              write (or check) `dvc.yaml` from the stage table
    mlaas serve [--params P] [--port N]   `bentoml serve` the pipeline's packaged champion
    mlaas ui                              the Prefect UI and the MLflow UI on the same state
    mlaas compare [--dataset NAME]        every model of a data set, test metrics side by side
    mlaas rollback [NAME] [--params P]    the champion back to the previous one, packaged again
    mlaas up [--params P ...] | status | down   the platform in the background, P deployed
    mlaas train NAME [--set K=V ...] [--wait]   a run of a deployed pipeline, now
    mlaas pipelines [NAME] | runs ID      the platform's pipelines, one run (as the API says)

On a machine that joined a team stack, `train`, `pipelines` and `runs` ask its control API
(`MLAAS_API_URL`, `MLAAS_API_KEY`), and `serve` first packages the team's champion here.

The workspace's environment (Prefect, MLflow, BentoML homes under $MLAAS_HOME) is applied before
any of those libraries is imported, so nothing lands in the user's home directory. The params are
read and checked before them too: a settings error is reported in a fraction of a second, and
leaves no flow run or tracking run behind.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mlaas.core.errors import MlaasError, SettingsError, StoreUnavailable
from mlaas.core.settings import MAX_SERVING_WORKERS, load_settings, read_yaml
from mlaas.families import check_settings
from mlaas.orchestration.heartbeats import SILENT_RUN_SECONDS, heartbeat_environment
from mlaas.stages.table import STAGES
from mlaas.stores.locks import PREFECT_API_LOCK, run_lock, workspace_lock
from mlaas.stores.team import joined
from mlaas.stores.tracking_server import MLFLOW_REQUEST_DEFAULTS, is_tracking_server
from mlaas.stores.workspace import Workspace, apply_environment

if TYPE_CHECKING:
    from mlaas.cli import platform

# The stages that read or write MLflow: the tracking store is checked before they start.
STAGES_USING_MLFLOW = ("tune", "train", "evaluate", "register", "promote", "package")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlaas", description="models as a service")
    parser.add_argument(
        "--home", help="state folder (default: $MLAAS_HOME, else .mlaas in this folder)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_params(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
        command.add_argument("--params", default="params.yaml", help="settings file")
        return command

    with_params(commands.add_parser("run", help="run the whole training_pipeline flow"))
    with_params(
        commands.add_parser(
            "monitor",
            help="check the served champion for drift and live quality now (the monitor flow); "
            "with `mlaas up` running, a drift starts a retraining",
        )
    )
    stage = with_params(commands.add_parser("stage", help="run one stage (used by dvc.yaml)"))
    stage.add_argument("name", choices=STAGES)
    with_params(commands.add_parser("repro", help="reproduce the pipeline with DVC, then push"))
    dvc_yaml = commands.add_parser("dvc-yaml", help="write dvc.yaml from the stage table")
    dvc_yaml.add_argument("--check", action="store_true", help="only say whether it is current")
    serve = with_params(commands.add_parser("serve", help="serve the packaged champion"))
    serve.add_argument("--port", type=int, help="port (default: serve.port in params)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (default: serve.workers in params)"
    )
    serve.add_argument(
        "--no-batching", action="store_true", help="answer each request alone (no batching)"
    )
    serve.add_argument(
        "--no-prediction-log",
        action="store_true",
        help="record nothing in the prediction log (monitor.log_predictions off for this server)",
    )
    compare = with_params(
        commands.add_parser("compare", help="every model of a data set, metrics side by side")
    )
    compare.add_argument("--dataset", help="data set name (default: the one in --params)")
    rollback = with_params(
        commands.add_parser(
            "rollback", help="move the champion back to the previous one and package it again"
        )
    )
    rollback.add_argument(
        "name", nargs="?", help="registered model (pipeline) name; default: pipeline.name in params"
    )
    ui = commands.add_parser("ui", help="Prefect UI and MLflow UI on the local state")
    ui.add_argument("--prefect-port", type=int, default=4200)
    ui.add_argument("--mlflow-port", type=int, default=5000)
    up = commands.add_parser("up", help="start the local platform in the background")
    up.add_argument(
        "--params",
        action="append",
        help="a pipeline to deploy on its `deploy` schedule (repeat for more; default params.yaml)",
    )
    up.add_argument("--prefect-port", type=int, default=4200, help="Prefect server and UI")
    up.add_argument("--mlflow-port", type=int, default=5000, help="MLflow server and UI")
    up.add_argument("--api-port", type=int, default=8000, help="the control API")
    up.add_argument(
        "--team",
        action="store_true",
        help="the team stack: PostgreSQL, MLflow with authentication, Prefect with workers",
    )
    up.add_argument("--postgres-port", type=int, default=5433, help="team mode's PostgreSQL")
    up.add_argument("--workers", type=int, default=2, help="team mode's Prefect workers")
    up.add_argument(
        "--max-upload-bytes",
        type=int,
        default=100 * 2**20,
        help="largest data set POST /datasets takes (default 100 MiB)",
    )
    commands.add_parser("status", help="each part of the platform: up, down or dead")
    commands.add_parser("down", help="stop what `mlaas up` started, by PID")
    train = commands.add_parser(
        "train", help="start a run of a deployed pipeline now (what POST /pipelines/NAME/runs does)"
    )
    train.add_argument("name", help="the pipeline (pipeline.name)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting for this run, e.g. --set train.max_epochs=3 (repeatable)",
    )
    train.add_argument("--reason", help="why; shown in the Prefect UI and recorded")
    train.add_argument("--wait", action="store_true", help="wait for the run to finish")
    pipelines = commands.add_parser("pipelines", help="the platform's pipelines (GET /pipelines)")
    pipelines.add_argument("name", nargs="?", help="one pipeline, in full")
    runs = commands.add_parser("runs", help="one run: state, version, decision (GET /runs/ID)")
    runs.add_argument("id", help="the run id `mlaas train` printed")
    return parser


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """`train.max_epochs=3` -> {"train": {"max_epochs": 3}}; values read as YAML (3, 0.5, true,
    [32, 64])."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sign, value = assignment.partition("=")
        if not sign or not key:
            raise SettingsError(f"--set {assignment!r}: write KEY=VALUE, e.g. train.max_epochs=3")
        *sections, last = key.split(".")
        target = overrides
        for section in sections:
            target = target.setdefault(section, {})
        try:
            target[last] = read_yaml(value)
        except yaml.YAMLError:
            raise SettingsError(f"--set {key}: {value!r} is not a value") from None
    return overrides


def _control(args: argparse.Namespace, workspace: Workspace) -> None:
    """`mlaas train | pipelines | runs`: the control API's functions, from the shell; on a
    machine that joined a team stack (`MLAAS_API_URL`), the stack's control API over HTTP."""
    import time

    from mlaas.control.client import API_URL_VARIABLE, ControlClient, LocalControl
    from mlaas.control.prefect_api import FINAL_STATES

    api_url = os.environ.get(API_URL_VARIABLE)
    if api_url:
        control: ControlClient | LocalControl = ControlClient(
            api_url.rstrip("/"), os.environ.get("MLAAS_API_KEY")
        )
    else:
        from mlaas.cli.platform import running_platform

        control = LocalControl(running_platform(workspace))
    if args.command == "pipelines":
        print(json.dumps(control.pipelines(args.name), indent=2))
        return
    if args.command == "runs":
        print(json.dumps(control.run(args.id), indent=2))
        return
    run = control.start_run(args.name, parse_overrides(args.set), args.reason)
    print(f"run {run['id']} of {run['pipeline']}: {run['state']}")
    print(f"  Prefect: {run['links']['prefect']}")
    while args.wait and run["state"] not in FINAL_STATES:
        time.sleep(2)
        run = control.run(run["id"])
    if args.wait:
        print(json.dumps(run, indent=2))
        if run["state"] != "COMPLETED":
            raise MlaasError(f"run {run['id']} ended {run['state_name']}: {run['message']}")


def _platform(args: argparse.Namespace, workspace: Workspace) -> None:
    from mlaas.cli import platform

    names = platform.all_part_names(workspace)
    if args.command == "down":
        platform.down(workspace, names)
        from mlaas.stores.team import stack_path

        stack_path(workspace).unlink(missing_ok=True)  # its data and secrets stay for next time
        return
    if args.command == "status":
        print(platform.format_states(platform.recorded_states(workspace, names)))
        pipelines = platform.format_rows(platform.pipeline_rows(workspace))
        if pipelines:
            print(f"\n{pipelines}")
        print(f"\n{_mode(workspace)}")
        return
    deployed: dict[str, Path] = {}
    for params in args.params or ["params.yaml"]:
        settings = load_settings(params)  # every file checked before anything starts
        check_settings(settings)
        name = settings.pipeline.name
        if name in deployed:
            raise MlaasError(
                f"{params} and {deployed[name]} both name pipeline {name!r}: "
                "deploy each pipeline once (pipeline.name)"
            )
        deployed[name] = Path(params).resolve()
    from mlaas.stores.catalog import Catalog

    ports = platform.Ports(args.prefect_port, args.mlflow_port, args.api_port, args.postgres_port)
    if args.team:
        workspace, parts = _team_parts(args, workspace, ports, deployed)
    else:
        from mlaas.stores.team import read_stack
        from mlaas.stores.tracking import tracking_client

        if read_stack(workspace) is not None:
            raise MlaasError(
                f"a team stack was started in {workspace.home}: `mlaas up --team` to start it "
                "again, or `mlaas down` first to run the single-user platform here"
            )
        tracking_client(workspace)  # a new store gets its Default experiment under the workspace
        parts = platform.platform_parts(
            workspace, ports, deployed, args.max_upload_bytes, Path.cwd()
        )
    Catalog(workspace).sync_files(deployed)
    print(platform.format_states(platform.up(workspace, parts)))


def _mode(workspace: Workspace) -> str:
    from mlaas.stores.team import read_stack

    stack = read_stack(workspace)
    if stack is None:
        return f"mode: single (SQLite and local files under {workspace.home})"
    return (
        f"mode: team (PostgreSQL on 127.0.0.1:{stack.postgres_port}, MLflow {stack.mlflow_url} "
        f"and Prefect {stack.prefect_api_url.removesuffix('/api')} with authentication, work "
        f"pool {stack.work_pool!r} with {stack.workers} workers here)"
    )


def _team_parts(
    args: argparse.Namespace,
    workspace: Workspace,
    ports: platform.Ports,
    deployed: dict[str, Path],
) -> tuple[Workspace, list[platform.Part]]:
    """The team stack's parts, and the workspace as its clients see it (exported here: the
    parts inherit this process's environment)."""
    from mlaas.cli import team
    from mlaas.stores import supervisor
    from mlaas.stores.team import (
        LOCK_DATABASE,
        TeamSecrets,
        read_stack,
        secrets_path,
        write_stack,
    )

    if args.workers < 1:
        raise MlaasError(f"--workers {args.workers}: give at least 1 (a worker runs the runs)")
    if read_stack(workspace) is None and supervisor.recorded_pids(workspace):
        raise MlaasError(
            f"the single-user platform runs in {workspace.home}: `mlaas down` first, then "
            "`mlaas up --team`"
        )
    stack = team.team_stack(ports, args.workers)
    team_secrets = TeamSecrets.load_or_create(secrets_path(workspace))
    team_workspace = Workspace(
        workspace.home,
        stack.mlflow_url,
        stack.postgres_url(LOCK_DATABASE, team_secrets.postgres_password),
    )
    write_stack(workspace, stack)  # before anything starts: `down` finds what did
    apply_environment(team_workspace)
    os.environ.update(stack.client_environment(team_secrets))
    for variable, value in MLFLOW_REQUEST_DEFAULTS.items():
        os.environ.setdefault(variable, value)  # the workers inherit them
    parts = team.team_parts(
        team_workspace, ports, stack, deployed, args.max_upload_bytes, Path.cwd()
    )
    return team_workspace, parts


def _ui(workspace: Workspace, prefect_port: int, mlflow_port: int) -> None:
    """Start both UIs on loopback and stop both when either stops (or on Ctrl-C)."""
    import subprocess
    import time

    bin_dir = Path(sys.executable).parent
    loopback = ["--host", "127.0.0.1"]
    prefect = [str(bin_dir / "prefect"), "server", "start", *loopback, "--port", str(prefect_port)]
    mlflow = [
        str(bin_dir / "mlflow"),
        "ui",
        *("--backend-store-uri", workspace.tracking_uri),
        *("--default-artifact-root", workspace.mlflow_artifacts.as_uri()),
        *loopback,
        *("--port", str(mlflow_port)),
    ]
    commands = [prefect, mlflow]
    print(
        f"Prefect UI: http://127.0.0.1:{prefect_port}   MLflow UI: http://127.0.0.1:{mlflow_port}"
    )
    processes = [subprocess.Popen(command) for command in commands]
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _start_prefect_api(workspace: Workspace) -> None:
    """Start Prefect's local API now, one process at a time: the first start creates its
    database, and two processes creating it at once fail (runs started together on a fresh
    $MLAAS_HOME). The flow then uses the API already running in this process."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return  # a Prefect server of its own: nothing to start here
    with (
        workspace_lock(workspace, PREFECT_API_LOCK, "starting Prefect's local API"),
        get_client(sync_client=True),
    ):
        pass


def _run_pipeline(params: str, name: str, workspace: Workspace) -> None:
    """The flow, for settings already checked: only now are Prefect, MLflow and torch imported."""
    from mlaas.stores.registry import check_tracking_store

    # Also checked by the flow; here it fails before Prefect and torch are imported and
    # Prefect's API is started. (Runs of one pipeline take turns: the flow holds the
    # pipeline's run lock.)
    check_tracking_store(workspace, name)
    import httpx
    from flows.training_pipeline import training_pipeline

    _start_prefect_api(workspace)
    try:
        training_pipeline(params=params, home=str(workspace.home))
    except httpx.HTTPError as error:  # Prefect's client raises httpx's errors, its own subclassed
        raise prefect_failure(error) from error


def prefect_failure(error: Exception) -> MlaasError:
    """The Prefect server failing under a run (stopped, or its database gone), as a message that
    names it, says what stopped the run when something else did first, and what to do."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or "(this run's temporary local server)"
    cause = " ".join(str(error).split())[:400]
    first = next(
        (e for e in _chain(error) if isinstance(e, MlaasError)), None
    )  # e.g. MLflow gone too: the error the flow was recording when Prefect failed
    stopped = f"the run stopped: {first} Then " if first else ""
    return StoreUnavailable(
        f"{stopped}the Prefect server at {url} failed under the run ({cause}): it may show "
        f"the run as Running until its heartbeats have been missing for {SILENT_RUN_SECONDS} s "
        "(a server `mlaas up` started then marks it Crashed). Check that the server and its "
        "database are up (team mode: `mlaas status` on the stack's machine; `mlaas up --team` "
        "starts what stopped), then run again: what the run registered is kept or was undone."
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and those it was raised from or while handling, nearest first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _monitor(params: str, workspace: Workspace) -> None:
    from mlaas.orchestration.monitor_flow import monitor

    load_settings(params)  # a bad params file fails before Prefect starts
    _start_prefect_api(workspace)
    outcome = monitor(params=params, home=str(workspace.home))
    if not outcome.get("checked", True):
        raise MlaasError(outcome["reason"])
    print(f"report: {outcome['report']}")


def _serve(
    params: str,
    port: int | None,
    workers: int | None = None,
    batching: bool = True,
    prediction_log: bool = True,
) -> None:
    from mlaas.serving.apikey import read_api_key
    from mlaas.serving.launch import ServerOptions, bentoml_serve_command, ensure_port_free

    settings = load_settings(params)
    read_api_key(os.environ)  # a bad key fails here, not in each worker (execv passes it on)
    host, port = settings.serve.host, port or settings.serve.port
    workers = settings.serve.workers if workers is None else workers
    if not 1 <= workers <= MAX_SERVING_WORKERS:
        raise MlaasError(f"--workers {workers}: give 1 to {MAX_SERVING_WORKERS} processes")
    options = ServerOptions(workers=workers, batching=batching, prediction_log=prediction_log)
    ensure_port_free(host, port)  # here, not as BentoML's traceback after it loaded the Bento

    import bentoml

    from mlaas.modeling.bundle import MODEL_SUBDIR, read_serving_info, verify_model_dir

    name = settings.pipeline.name
    workspace = Workspace.from_env()
    if workspace.store_uri is not None:
        # A registry shared with other machines (team mode): its current champion packaged
        # here first, so that a machine whose runs never made it serves it too (a no-op when
        # the newest Bento here already holds it).
        from mlaas.stages import package
        from mlaas.stages.context import StageContext
        from mlaas.stores.registry import check_tracking_store

        check_tracking_store(workspace, name)
        package.run(StageContext(settings, workspace))
    try:
        bento = bentoml.bentos.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        raise MlaasError(
            f"no Bento for pipeline {name!r} yet: run `make run PARAMS={params}` first"
        ) from None
    # The service refuses tampered model files too, but BentoML would restart its worker
    # forever; checked here, the command stops with the reason and a non-zero status.
    stored = Path(bentoml.models.get(f"{name}:latest").path)
    verify_model_dir(stored / MODEL_SUBDIR, read_serving_info(stored).model_sha256)
    command = bentoml_serve_command(
        str(bento.tag),
        host,
        port,
        workspace.metrics_dir(host, port),
    )
    os.environ.update(options.environment())
    print(f"serving {bento.tag} on http://{host}:{port} ({workers} worker(s))")
    if not settings.serve.tracing:
        os.environ["OTEL_SDK_DISABLED"] = "true"
    os.execv(command[0], command)


def _rollback(params: str, name: str | None, workspace: Workspace) -> None:
    settings = load_settings(params)  # before the imports below, which take seconds

    from mlaas.stages import package
    from mlaas.stages.context import StageContext
    from mlaas.stages.rollback import rollback
    from mlaas.stores.registry import check_tracking_store

    pipeline = settings.pipeline.model_copy(update={"name": name or settings.pipeline.name})
    check_tracking_store(workspace)
    rolled = rollback(pipeline.name, workspace)
    print(f"champion of {rolled.name}: v{rolled.from_version} -> v{rolled.to_version}")
    ctx = StageContext(settings.model_copy(update={"pipeline": pipeline}), workspace)
    packaged = package.run(ctx)
    print(
        f"packaged v{packaged.version.version} as {packaged.bento_tag}: a running server swaps "
        "it in within serve.champion_poll_seconds"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A team stack started here (`mlaas up --team`) is what every command here uses.
    try:
        workspace, team_environment = joined(Workspace.from_env(args.home))
    except MlaasError as error:
        print(f"mlaas: error: {error}", file=sys.stderr)
        return 2
    apply_environment(workspace)
    os.environ.update(team_environment)
    if is_tracking_server(workspace.tracking_uri):
        for variable, value in MLFLOW_REQUEST_DEFAULTS.items():
            os.environ.setdefault(variable, value)
    if args.command in ("run", "monitor") and not os.environ.get("PREFECT_API_URL"):
        from mlaas.cli.platform import running_prefect_api

        # The server of a `mlaas up` on this workspace, else a temporary one for this run.
        if prefect_api := running_prefect_api(workspace):
            os.environ["PREFECT_API_URL"] = prefect_api
    if os.environ.get("PREFECT_API_URL"):
        # A run on a Prefect server sends heartbeats: one cut off from it (its machine gone,
        # or the server's database) is marked Crashed there, not left Running for ever.
        for variable, value in heartbeat_environment().items():
            os.environ.setdefault(variable, value)
    try:
        workspace.ensure_writable()
        if args.command == "run":
            settings = load_settings(args.params)
            check_settings(settings)
            _run_pipeline(args.params, settings.pipeline.name, workspace)
        elif args.command == "monitor":
            _monitor(args.params, workspace)
        elif args.command == "stage":
            from mlaas.stages.table import run_stage
            from mlaas.stores.datasets import with_local_data

            settings = with_local_data(load_settings(args.params), workspace)
            check_settings(settings)
            with run_lock(workspace, settings.pipeline.name):
                if args.name in STAGES_USING_MLFLOW:
                    from mlaas.stores.registry import check_tracking_store

                    check_tracking_store(workspace, settings.pipeline.name)
                record = run_stage(args.name, settings, workspace)
            print(record.model_dump_json(indent=2))
        elif args.command == "repro":
            from mlaas.orchestration.dvcfile import reproduce
            from mlaas.stores.datasets import with_local_data

            settings = with_local_data(load_settings(args.params), workspace)
            check_settings(settings)
            reproduce(settings, Path.cwd())
        elif args.command == "dvc-yaml":
            from mlaas.orchestration.dvcfile import DVC_YAML, write_dvc_yaml

            current = write_dvc_yaml(Path.cwd(), check=args.check)
            if args.check and not current:
                raise MlaasError(f"{DVC_YAML} is out of date: write it with `mlaas dvc-yaml`")
            print(f"{DVC_YAML} is current" if current else f"wrote {DVC_YAML}")
        elif args.command == "serve":
            _serve(
                args.params,
                args.port,
                workers=args.workers,
                batching=not args.no_batching,
                prediction_log=not args.no_prediction_log,
            )
        elif args.command == "compare":
            from mlaas.cli.compare import format_table, runs_for_dataset

            dataset = args.dataset or load_settings(args.params).load.dataset_name
            rows = runs_for_dataset(workspace, dataset)
            if not rows:
                raise MlaasError(f"no evaluated runs for data set {dataset!r} in {workspace.home}")
            print(f"data set {dataset!r}:\n{format_table(rows)}")
        elif args.command == "rollback":
            _rollback(args.params, args.name, workspace)
        elif args.command == "ui":
            _ui(workspace, args.prefect_port, args.mlflow_port)
        elif args.command in ("up", "status", "down"):
            _platform(args, workspace)
        elif args.command in ("train", "pipelines", "runs"):
            _control(args, workspace)
    except MlaasError as error:
        print(f"mlaas: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A disk that fills up mid-run: say so, and where, instead of a library's traceback.
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"mlaas: error: {workspace.explain(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
