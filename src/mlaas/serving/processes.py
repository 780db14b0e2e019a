"""Helpers for tests and benchmarks that need a real server: `mlaas serve` (or any other) as a
subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mlaas.stores.workspace import TRACKING_URI_VARIABLE, Workspace


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running `mlaas serve`: its base URL and its process (the leader of its group)."""

    url: str
    process: subprocess.Popen[bytes]

    def resident_bytes(self) -> int:
        """Resident memory of the server and every worker it started (soak tests watch it)."""
        import psutil

        leader = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in (leader, *leader.children(recursive=True)))


@contextmanager
def served(
    params: Path,
    workspace: Workspace,
    log: Path,
    *extra: str,
    ready_within: float = 120,
    environment: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """`mlaas serve` on a free loopback port, waited for until /readyz answers; yields its base
    URL and stops the whole process group (bentoml serve starts workers) on exit. It runs in
    `environment` (this process's by default) with the workspace's home and store."""
    with server_process(
        params, workspace, log, *extra, ready_within=ready_within, environment=environment
    ) as server:
        yield server.url


@contextmanager
def server_process(
    params: Path,
    workspace: Workspace,
    log: Path,
    *extra: str,
    ready_within: float = 120,
    environment: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Like `served`, but yields the process too (for tests that watch or signal it)."""
    port = free_port()
    executable = str(Path(sys.executable).parent / "mlaas")
    command = [executable, "serve", "--params", str(params), *extra, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    variables = {
        **(os.environ if environment is None else environment),
        "MLAAS_HOME": str(workspace.home),
        TRACKING_URI_VARIABLE: workspace.store_uri or "",
    }
    with server_started(command, f"{base}/readyz", log, ready_within, variables) as process:
        yield Server(base, process)


@contextmanager
def server_started(
    command: list[str],
    ready_url: str,
    log: Path,
    ready_within: float = 120,
    environment: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Any HTTP server as a subprocess (its output in `log`), waited for until `ready_url`
    answers 200, and stopped on exit with every process it started."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            env=dict(os.environ if environment is None else environment),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None:
                raise ServerFailed(f"server exited with {process.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"server not ready in {ready_within:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)
        yield process
    finally:
        # BentoML starts each worker in a session of its own, out of reach of the group signal:
        # they are noted now, and any that outlive the server are killed.
        workers = _descendants(process.pid)
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
        for worker in workers:
            with suppress(Exception):
                worker.kill()


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    """Signal the server and its workers; workers may outlive a leader that already exited."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal_number)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]
