"""`mlaas down` signals only what `mlaas up` started: a record is the process's PID *and* its
start time, so a PID the system has since given to another program is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

from mlaas.stores import supervisor
from mlaas.stores.workspace import Workspace

# A leader that starts a worker and waits: a server's shape.
LEADER_WITH_WORKER = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)


@contextmanager
def _leader_with_worker() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", LEADER_WITH_WORKER], start_new_session=True)
    try:
        leader = psutil.Process(process.pid)
        while not leader.children():
            psutil.wait_procs([leader], timeout=0.05)
        yield process
    finally:
        with suppress(ProcessLookupError):  # the leader's group: the leader and its worker
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited; its parent is gone too
    except psutil.NoSuchProcess:
        return True


def _record(process: subprocess.Popen[bytes], started_at: float) -> supervisor.ProcessRecord:
    return supervisor.ProcessRecord("part", process.pid, started_at, "http://x", "log", [])


def test_a_record_of_another_start_time_is_neither_running_nor_stopped() -> None:
    with _leader_with_worker() as process:
        born = psutil.Process(process.pid).create_time()
        # The recorded process started later than the one now holding its PID: not ours.
        stale = _record(process, born + 100)
        assert not supervisor.is_running(stale)
        supervisor.stop(stale)
        assert process.poll() is None
        assert psutil.Process(process.pid).children()


def test_stop_ends_the_process_and_what_it_started_even_after_the_leader_died() -> None:
    with _leader_with_worker() as process:
        record = _record(process, psutil.Process(process.pid).create_time())
        assert supervisor.is_running(record)
        (worker,) = psutil.Process(process.pid).children()
        process.kill()
        process.wait()
        assert not supervisor.is_running(record) and not _gone(worker)
        supervisor.stop(record)
        assert _gone(worker)


def test_a_record_cut_short_reads_as_never_started(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    supervisor.run_dir(workspace).mkdir()
    (supervisor.run_dir(workspace) / "prefect.json").write_text('{"name": "pre')
    assert supervisor.read_record(workspace, "prefect") is None
    assert not (supervisor.run_dir(workspace) / "prefect.json").exists()


def test_a_running_part_stays_recognised_when_the_wall_clock_moves() -> None:
    """psutil's start times move with the boot time, whole seconds of wall clock that shift
    when the clock is adjusted: the kernel's start ticks are what identify the process."""
    with _leader_with_worker() as process:
        born = psutil.Process(process.pid).create_time()
        ticks = supervisor.start_ticks(process.pid)
        assert ticks is not None and ticks > 0
        shifted = supervisor.ProcessRecord(
            "part", process.pid, born - 1.0, "http://x", "log", [], start_ticks=ticks
        )
        assert supervisor.is_running(shifted)
        other_start = supervisor.ProcessRecord(
            "part", process.pid, born, "http://x", "log", [], start_ticks=ticks + 1
        )
        assert not supervisor.is_running(other_start)
