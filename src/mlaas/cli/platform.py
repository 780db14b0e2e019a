"""`mlaas up | status | down`: the local platform as background processes on 127.0.0.1.

The parts so far: the Prefect server (its UI shows every deployment and flow run; its database
is under `$MLAAS_HOME/prefect`), the MLflow server on the workspace's tracking store, and the
deployments' runner (`mlaas.orchestration.deployments`: each deployed pipeline on its schedule).
Each is started once (`up` twice starts no second copy; `up` with other settings restarts what
changed), restarted by `up` when it died, reported by `status`, and stopped by `down` by the
PID recorded when it started, and nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mlaas.core.errors import MlaasError
from mlaas.serving.launch import ensure_port_free
from mlaas.stores import supervisor
from mlaas.stores.workspace import Workspace

HOST = "127.0.0.1"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
FLOW_NAME = "training_pipeline"
PART_NAMES = ("prefect", "mlflow", "deployments")
# Both servers start in seconds; a busy 2-core machine running tests beside them needs more.
READY_WITHIN_SECONDS = 120.0


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

    def answers(self) -> bool:
        try:
            return all(httpx.get(url, timeout=2).status_code == 200 for url in self.ready_urls)
        except httpx.TransportError:
            return False


def platform_parts(
    workspace: Workspace, prefect_port: int, mlflow_port: int, deployed: Mapping[str, Path]
) -> list[Part]:
    """The Prefect server, the MLflow server, and the runner of `deployed`'s deployments
    (pipeline name -> its params file)."""
    bin_dir = Path(sys.executable).parent
    loopback = ["--host", HOST]
    prefect = f"http://{HOST}:{prefect_port}"
    mlflow = f"http://{HOST}:{mlflow_port}"
    runner = [sys.executable, "-m", "mlaas.orchestration.deployments"]
    return [
        Part(
            "prefect",
            prefect_port,
            [str(bin_dir / "prefect"), "server", "start", *loopback, "--port", str(prefect_port)],
            prefect,
            (f"{prefect}/api/health",),
        ),
        Part(
            "mlflow",
            mlflow_port,
            [
                str(bin_dir / "mlflow"),
                "server",
                *("--backend-store-uri", workspace.tracking_uri),
                *("--default-artifact-root", workspace.mlflow_artifacts.as_uri()),
                *loopback,
                *("--port", str(mlflow_port)),
                # One worker: the UI for one person; team mode serves more.
                *("--workers", "1"),
            ],
            mlflow,
            (f"{mlflow}/health",),
        ),
        Part(
            "deployments",
            None,
            [
                *(*runner, "--home", str(workspace.home)),
                *(arg for params in deployed.values() for arg in ("--params", str(params))),
            ],
            f"{prefect}/deployments",
            tuple(
                f"{prefect}/api/deployments/name/{FLOW_NAME}/{name}" for name in sorted(deployed)
            ),
            {"PREFECT_API_URL": f"{prefect}/api"},
        ),
    ]


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
    environment = {**os.environ, **workspace.environment()}
    # The Prefect server is the API the other parts use, not a client of another one.
    environment.pop("PREFECT_API_URL", None)
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
            supervisor.stop(record)  # what it started may still hold its port
            supervisor.forget(workspace, part.name)
        if part.port is not None:
            ensure_free(part.name, part.port)
        started = supervisor.start(
            workspace,
            part.name,
            part.command,
            part.url,
            part.answers,
            {**environment, **part.environment},
            READY_WITHIN_SECONDS,
        )
        say(f"{part.name}: up at {started.url} (pid {started.pid}, log {started.log})")
    return recorded_states(workspace, [part.name for part in parts])


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
        supervisor.stop(record)  # also what a dead one left behind
        supervisor.forget(workspace, name)
        if running:
            say(f"{name}: stopped (pid {record.pid})")


def format_states(states: list[PartState]) -> str:
    rows = [("part", "state", "url", "pid", "log")] + [
        (s.name, s.state, s.url, str(s.pid or "-"), s.log) for s in states
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)
