"""Helpers for tests and benchmarks that need a real server: `mlaas serve` as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from mlaas.workspace import Workspace


class ServerFailed(RuntimeError):
    """The server exited or never became ready; the message ends with its log."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(
    params: Path, workspace: Workspace, log: Path, *extra: str, ready_within: float = 120
) -> Iterator[str]:
    """`mlaas serve` on a free loopback port, waited for until /readyz answers; yields its base
    URL and stops the whole process group (bentoml serve starts workers) on exit."""
    port = free_port()
    executable = str(Path(sys.executable).parent / "mlaas")
    command = [executable, "serve", "--params", str(params), *extra]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            env={**os.environ, "MLAAS_HOME": str(workspace.home)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None:
                raise ServerFailed(f"server exited with {process.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"server not ready in {ready_within:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]
