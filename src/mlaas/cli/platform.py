"""`mlaas up | status | down`: the local platform as background processes on 127.0.0.1.

The parts: the Prefect server (its UI shows every deployment and flow run; its database is
under `$MLAAS_HOME/prefect`), the MLflow server on the workspace's tracking store, the
deployments' runner (`mlaas.orchestration.deployments`: each pipeline on its schedule), the
control API (`mlaas.control.server`), and a model server per pipeline with a champion
(`serve-NAME`). Each is started once (`up` twice starts no second copy; `up` with other
settings restarts what changed), restarted by `up` when it died, reported by `status`, and
stopped by `down` by the PID recorded when it started, and nothing else.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from mlaas.control.prefect_api import basic_auth
from mlaas.core.errors import MlaasError
from mlaas.orchestration.heartbeats import heartbeat_environment
from mlaas.serving.launch import ensure_port_free
from mlaas.stores import supervisor
from mlaas.stores.team import team_part_names
from mlaas.stores.tracking_server import WITHOUT_SERVER_JOBS
from mlaas.stores.workspace import Workspace

if TYPE_CHECKING:
    from mlaas.control.operations import PipelineView, Platform

HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_API_PORT = 8000
# Not 5432: Debian's own `main` cluster takes that one where its service runs.
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_TEAM_WORKERS = 2
FLOW_NAME = "training_pipeline"
PART_NAMES = ("prefect", "mlflow", "deployments", "api")
RUNNER_POLL_SECONDS = 2
# Each part starts in seconds; a busy 2-core machine starting the team stack's three servers at
# once, with tests running beside them, needed up to 90 s for MLflow.
READY_WITHIN_SECONDS = 240.0


@dataclass(frozen=True)
class Part:
    """One process of the platform: how to start it and how to see that it serves."""

    name: str
    port: int | None
    """The port it listens on (checked free before it starts); None for one that listens on none."""
    command: list[str]
    url: str
    """Where a person looks at it."""
    ready_urls: tuple[str, ...]
    """Each answers 200 once the part serves."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Added to the workspace's environment."""
    after: tuple[str, ...] = ()
    """The parts that must answer before this one starts."""
    ready_check: Callable[[], bool] | None = None
    """Instead of `ready_urls`, for a part that speaks no HTTP (PostgreSQL, a Prefect worker)."""
    prepare: Callable[[], None] | None = None
    """Run once before it starts (PostgreSQL's `initdb`)."""
    ready_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Sent with the `ready_urls` requests: credentials where the server asks for them."""

    def answers(self) -> bool:
        if self.ready_check is not None:
            return self.ready_check()
        try:
            return all(
                httpx.get(url, headers=dict(self.ready_headers), timeout=2).status_code == 200
                for url in self.ready_urls
            )
        except httpx.TransportError:
            return False


@dataclass(frozen=True)
class Ports:
    prefect: int = DEFAULT_PREFECT_PORT
    mlflow: int = DEFAULT_MLFLOW_PORT
    api: int = DEFAULT_API_PORT
    postgres: int = DEFAULT_POSTGRES_PORT
    """Team mode only."""


def platform_parts(
    workspace: Workspace,
    ports: Ports,
    deployed: Mapping[str, Path],
    max_upload_bytes: int,
    project_root: Path,
) -> list[Part]:
    """The Prefect server, the MLflow server, the runner of `deployed`'s deployments (pipeline
    name -> its params file) and of the API's pipelines, and the control API."""
    return [
        prefect_part(ports.prefect),
        mlflow_part(
            ports.mlflow,
            [
                *("--backend-store-uri", workspace.tracking_uri),
                *("--default-artifact-root", workspace.mlflow_artifacts.as_uri()),
            ],
        ),
        deployments_part(workspace, ports.prefect, deployed),
        api_part(workspace, ports, max_upload_bytes, project_root),
    ]


BIN_DIR = Path(sys.executable).parent


def mlflow_part(
    port: int,
    store_arguments: list[str],
    environment: Mapping[str, str] | None = None,
    after: tuple[str, ...] = (),
    prepare: Callable[[], None] | None = None,
) -> Part:
    """`mlflow server` on loopback with the store `store_arguments` name. One process: its
    requests run on a thread pool, and with more, uvicorn's supervisor restarts a worker that is
    slow to answer its ping (on a busy 2-core machine, still importing MLflow, every worker was
    restarted over and over and the server never came up)."""
    mlflow = f"http://{HOST}:{port}"
    return Part(
        "mlflow",
        port,
        [
            *(str(BIN_DIR / "mlflow"), "server", *store_arguments),
            *("--host", HOST, "--port", str(port), "--workers", "1"),
        ],
        mlflow,
        (f"{mlflow}/health",),
        {**WITHOUT_SERVER_JOBS, **(environment or {})},
        after=after,
        prepare=prepare,
    )


def running_prefect_api(workspace: Workspace) -> str | None:
    """The API of the Prefect server `mlaas up` started on this workspace, while it answers;
    None when there is none. A run there skips starting and stopping a temporary server of its
    own (about 7 s of a run that changes nothing) and shows in the UI that is already open."""
    record = supervisor.read_record(workspace, "prefect")
    if record is None or not supervisor.is_running(record):
        return None
    try:
        healthy = httpx.get(f"{record.url}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        healthy = False
    return f"{record.url}/api" if healthy else None


def prefect_part(
    port: int, environment: Mapping[str, str] | None = None, after: tuple[str, ...] = ()
) -> Part:
    prefect = f"http://{HOST}:{port}"
    return Part(
        "prefect",
        port,
        [str(BIN_DIR / "prefect"), "server", "start", "--host", HOST, "--port", str(port)],
        prefect,
        (f"{prefect}/api/health",),
        environment or {},
        after=after,
    )


def deployments_part(
    workspace: Workspace,
    prefect_port: int,
    deployed: Mapping[str, Path],
    work_pool: str | None = None,
    prefect_auth: str | None = None,
) -> Part:
    """The process that registers each pipeline's deployments: and runs them itself, or, with
    `work_pool` (team mode), leaves them to that pool's workers. `prefect_auth`: the Prefect
    API's `user:password`, where it asks for one (team mode)."""
    prefect = f"http://{HOST}:{prefect_port}"
    command = [
        *(sys.executable, "-m", "mlaas.orchestration.deployments", "--home", str(workspace.home)),
        *(arg for params in deployed.values() for arg in ("--params", str(params))),
        *(("--work-pool", work_pool) if work_pool else ()),
    ]
    return Part(
        "deployments",
        None,
        command,
        f"{prefect}/deployments",
        tuple(f"{prefect}/api/deployments/name/{FLOW_NAME}/{name}" for name in sorted(deployed)),
        {
            "PREFECT_API_URL": f"{prefect}/api",
            # A run asked for over the API starts within 2 s, not Prefect's default 10 s.
            "PREFECT_RUNNER_POLL_FREQUENCY": str(RUNNER_POLL_SECONDS),
            # The runs it starts itself (single mode) send heartbeats.
            **heartbeat_environment(),
        },
        after=("prefect",),  # it registers its deployments with the server as it starts
        ready_headers=basic_auth(prefect_auth),
    )


def api_part(
    workspace: Workspace,
    ports: Ports,
    max_upload_bytes: int,
    project_root: Path,
    after: tuple[str, ...] = (),
    work_pool: str | None = None,
) -> Part:
    prefect = f"http://{HOST}:{ports.prefect}"
    return Part(
        "api",
        ports.api,
        [
            *(sys.executable, "-m", "mlaas.control.server", "--home", str(workspace.home)),
            *("--host", HOST, "--port", str(ports.api)),
            *("--prefect-url", f"{prefect}/api", "--mlflow-url", f"http://{HOST}:{ports.mlflow}"),
            *("--max-upload-bytes", str(max_upload_bytes)),
            *("--project-root", str(project_root)),
            *("--reserved-port", str(ports.prefect), "--reserved-port", str(ports.mlflow)),
            *(("--work-pool", work_pool) if work_pool else ()),
        ],
        f"http://{HOST}:{ports.api}/",
        (f"http://{HOST}:{ports.api}/healthz",),
        {"PREFECT_API_URL": f"{prefect}/api"},
        after=after,
    )


@dataclass(frozen=True)
class PartState:
    name: str
    state: str
    """`up`, `down` (never started, or stopped), or `dead` (recorded, but no longer running)."""
    url: str
    pid: int | None
    log: str


def up(
    workspace: Workspace, parts: list[Part], say: Callable[[str], None] = print
) -> list[PartState]:
    """Start every part that is not running; leave running ones alone."""
    # Unbuffered: a part's log shows what it said up to the moment it was stopped.
    environment = {**os.environ, **workspace.environment(), "PYTHONUNBUFFERED": "1"}
    # The Prefect server is the API the other parts use, not a client of another one.
    environment.pop("PREFECT_API_URL", None)
    pending: list[Part] = []
    for part in parts:
        record = supervisor.read_record(workspace, part.name)
        running = record is not None and supervisor.is_running(record)
        if record is not None and running and record.command == part.command:
            say(f"{part.name}: already up at {record.url} (pid {record.pid})")
            continue
        if record is not None:
            if running:
                say(f"{part.name}: started with other settings (pid {record.pid}); restarting it")
            else:
                say(f"{part.name}: pid {record.pid} is no longer running; starting it again")
            # What it started may still hold its port; the model servers the API started stay.
            supervisor.stop(record, spare=supervisor.recorded_pids(workspace) - {record.pid})
            supervisor.forget(workspace, part.name)
        pending.append(part)
    for part in pending:  # every port checked before anything starts
        if part.port is not None:
            ensure_free(part.name, part.port)
    # In waves: each part once those it needs answer, the parts of a wave side by side (each
    # spends most of its start importing, and there are cores for more than one).
    while pending:
        waiting = {part.name for part in pending}
        wave = [part for part in pending if not waiting & set(part.after)]
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            starts = [pool.submit(_start, workspace, part, environment, say) for part in wave]
        for finished in starts:
            finished.result()  # the first part that failed, with the end of its log
        pending = [part for part in pending if part not in wave]
    from mlaas.control.model_servers import ensure_model_servers, model_server_names

    ensure_model_servers(workspace, say)
    return recorded_states(
        workspace, [*(part.name for part in parts), *model_server_names(workspace)]
    )


def _start(
    workspace: Workspace, part: Part, environment: Mapping[str, str], say: Callable[[str], None]
) -> None:
    begun = time.monotonic()
    if part.prepare is not None:
        part.prepare()
    started = supervisor.start(
        workspace,
        part.name,
        part.command,
        part.url,
        part.answers,
        {**environment, **part.environment},
        READY_WITHIN_SECONDS,
    )
    took = time.monotonic() - begun
    say(f"{part.name}: up at {started.url} in {took:.0f} s (pid {started.pid}, log {started.log})")


def all_part_names(workspace: Workspace) -> list[str]:
    """Every part, in the order `up` starts them (`down` stops them the other way round): the
    API before the model servers it may start, so none starts while they are stopped; in team
    mode PostgreSQL first (and last to stop), the workers after the deployments."""
    from mlaas.control.model_servers import model_server_names

    first, workers = team_part_names(workspace)
    servers = model_server_names(workspace)
    return [*first, *PART_NAMES[:-1], *workers, *servers, PART_NAMES[-1]]


def ensure_free(name: str, port: int) -> None:
    try:
        ensure_port_free(HOST, port)
    except MlaasError:
        raise MlaasError(
            f"{name}: port {port} on {HOST} is already in use by a process mlaas did "
            f"not start: stop it, or pick another port (`mlaas up --{name}-port N`)"
        ) from None


def recorded_states(workspace: Workspace, names: list[str]) -> list[PartState]:
    """Each part as its record says: up, dead (recorded, no longer running) or down."""
    states = []
    for name in names:
        record = supervisor.read_record(workspace, name)
        if record is None:
            log = str(supervisor.logs_dir(workspace) / f"{name}.log")
            states.append(PartState(name, "down", "-", None, log))
        else:
            state = "up" if supervisor.is_running(record) else "dead"
            states.append(PartState(name, state, record.url, record.pid, record.log))
    return states


def down(workspace: Workspace, names: list[str], say: Callable[[str], None] = print) -> None:
    """Stop every recorded part that still runs, and forget all of them: in the reverse order
    of `up` (the deployments' runner leaves while the Prefect server can still hear it)."""
    for name in reversed(names):
        record = supervisor.read_record(workspace, name)
        if record is None:
            continue
        running = supervisor.is_running(record)
        # Also what a dead one left behind; not the other parts it started (the API's servers).
        supervisor.stop(record, spare=supervisor.recorded_pids(workspace) - {record.pid})
        supervisor.forget(workspace, name)
        if running:
            say(f"{name}: stopped (pid {record.pid})")
    supervisor.clear_problems(workspace)


def format_states(states: list[PartState]) -> str:
    rows = [("part", "state", "url", "pid", "log")] + [
        (s.name, s.state, s.url, str(s.pid or "-"), s.log) for s in states
    ]
    return format_rows(rows)


def running_platform(workspace: Workspace) -> Platform:
    """The platform `mlaas up` started, as the control functions act on it (for `mlaas train`,
    `pipelines`, `runs`): its Prefect and MLflow servers as their records say."""
    from mlaas.control.operations import Platform
    from mlaas.control.prefect_api import PrefectApi
    from mlaas.control.server import DEFAULT_MAX_UPLOAD_BYTES

    urls = {}
    for name in ("prefect", "mlflow"):
        record = supervisor.read_record(workspace, name)
        if record is None or not supervisor.is_running(record):
            raise MlaasError(
                f"the platform's {name} server is not running: start it with `mlaas up`"
            )
        urls[name] = record.url
    return Platform(
        workspace=workspace,
        prefect=PrefectApi(f"{urls['prefect']}/api", os.environ.get("PREFECT_API_AUTH_STRING")),
        mlflow_url=urls["mlflow"],
        max_upload_bytes=DEFAULT_MAX_UPLOAD_BYTES,
        project_root=Path.cwd(),
    )


def pipeline_rows(workspace: Workspace) -> list[tuple[str, ...]]:
    """`mlaas status`'s second table: each pipeline's champion, last run, next run, server."""
    from mlaas.control.operations import list_pipelines

    try:
        platform = running_platform(workspace)
    except MlaasError:
        return []
    rows: list[tuple[str, ...]] = [
        ("pipeline", "champion", "last run", "next run", "monitor", "server")
    ]
    for view in list_pipelines(platform):
        champion = "-"
        if view.champion is not None:
            metric = view.champion.decided_on
            value = view.champion.metrics.get(metric) if metric else None
            shown = f" {metric}={value:.4f}" if value is not None else ""
            champion = f"v{view.champion.version}{shown}"
        last = view.last_runs[0] if view.last_runs else None
        when = last.end_time or last.start_time or last.expected_start if last else None
        last_run = f"{last.state} {_ago(when)}" if last else "-"
        next_run = view.next_run.isoformat(timespec="seconds") if view.next_run else "-"
        server = f"{view.server.url} ({view.server.state})"
        if view.server.problem:  # why the platform could not start it, in the last try's words
            server += f": {view.server.problem.splitlines()[0]}"
        rows.append((view.name, champion, last_run, next_run, _monitor_cell(view), server))
    return rows


def _monitor_cell(view: PipelineView) -> str:
    """The last check: drift or not, live quality, what it did ("-" before the first)."""
    check = view.monitoring
    if check is None:
        return "-"
    verdict = "DRIFT" if check.drifted else "no drift"
    if check.live_value is not None:
        verdict += f", live {check.live_metric}={check.live_value:.3f} (n={check.live_feedback})"
    if check.retraining in ("started", "cooling_down", "failed"):
        verdict += f", retraining {check.retraining.replace('_', ' ')}"
    return f"{verdict} {_ago(check.checked_at)}"


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return moment.isoformat(timespec="minutes")


def format_rows(rows: Sequence[tuple[str, ...]]) -> str:
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
