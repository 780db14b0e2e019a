"""The processes `mlaas up` started, as records under `$MLAAS_HOME/run/`, and their life.

Each process is started in a session of its own (its children die with its group), its output
goes to `$MLAAS_HOME/logs/NAME.log`, and a record (`run/NAME.json`: PID, start time, port, URL,
command) is written once it answers. A record is "ours" only while a process with its PID *and*
its start time exists: a PID the system gave to another program since is never signalled.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from mlaas.core.errors import PartFailed
from mlaas.stores.files import write_whole
from mlaas.stores.workspace import Workspace

# psutil's start times are the boot time plus the kernel's ticks since boot, and the boot time
# is whole seconds of wall clock: when the clock is slewed or stepped it moves by a second, and
# every process then reads back a second off (seen in CI: all of `mlaas up`'s parts reported
# dead at once while they ran). Where /proc gives the ticks themselves they are compared
# exactly; elsewhere the wall-clock times, within this.
_SAME_START_SECONDS = 2.0
_STOP_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class ProcessRecord:
    """A process `mlaas up` started and saw answer."""

    name: str
    pid: int
    started_at: float
    """The process's start time (`psutil.Process.create_time()`), to tell it from a reused PID."""
    url: str
    log: str
    command: list[str]
    start_ticks: int | None = None
    """The kernel's start time of the process in clock ticks since boot (Linux's /proc), which
    no clock change moves; None where there is no /proc."""


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the command name, which may hold spaces or ')')."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[19])


def run_dir(workspace: Workspace) -> Path:
    return workspace.home / "run"


def logs_dir(workspace: Workspace) -> Path:
    return workspace.home / "logs"


def read_record(workspace: Workspace, name: str) -> ProcessRecord | None:
    path = run_dir(workspace) / f"{name}.json"
    try:
        return ProcessRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # cut short while written: treat as never started
        path.unlink(missing_ok=True)
        return None


def is_running(record: ProcessRecord) -> bool:
    """Whether the recorded process still runs (and is the one recorded, not a reused PID)."""
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if record.start_ticks is not None:
            return start_ticks(record.pid) == record.start_ticks
        return abs(process.create_time() - record.started_at) < _SAME_START_SECONDS
    except psutil.Error:
        return False


def start(
    workspace: Workspace,
    name: str,
    command: list[str],
    url: str,
    is_ready: Callable[[], bool],
    environment: Mapping[str, str],
    ready_within: float,
) -> ProcessRecord:
    """Start `command` in the background and wait until `is_ready()`; its record once it is.

    A process that exits or does not answer in time is stopped (its whole group) and reported
    with the end of its log; no record is left for it.
    """
    logs_dir(workspace).mkdir(parents=True, exist_ok=True)
    run_dir(workspace).mkdir(parents=True, exist_ok=True)
    log = logs_dir(workspace) / f"{name}.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            env=dict(environment),
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    record = ProcessRecord(
        name=name,
        pid=process.pid,
        started_at=psutil.Process(process.pid).create_time(),
        url=url,
        log=str(log),
        command=command,
        start_ticks=start_ticks(process.pid),
    )
    deadline = time.monotonic() + ready_within
    while not is_ready():
        if process.poll() is not None:
            raise PartFailed(f"{name} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            stop(record)
            raise PartFailed(
                f"{name} did not answer at {url} in {ready_within:.0f} s:\n{_tail(log)}"
            )
        time.sleep(0.25)
    _write_record(workspace, record)
    return record


def stop(record: ProcessRecord, spare: Collection[int] = ()) -> None:
    """SIGTERM the process and what it started, then SIGKILL what is left after a grace period.

    Also when the recorded process itself is gone: a leader killed from outside leaves its
    workers running (and holding its port), still in its process group. Processes in `spare`
    (other recorded parts this one started: the control API's model servers) and theirs live on.
    """
    members = _members(record, frozenset(spare))
    for process in members:
        with suppress(psutil.Error):
            process.terminate()
    left = _wait_gone(members, _STOP_GRACE_SECONDS)
    for process in left:
        with suppress(psutil.Error):
            process.kill()
    _wait_gone(left, 5.0)


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of `processes` still running after `seconds`. An exited process that nobody has
    reaped yet (a zombie: its parent died too) counts as gone: it holds no port or memory."""
    deadline = time.monotonic() + seconds
    while True:
        left = [process for process in processes if _still_runs(process)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _still_runs(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def forget(workspace: Workspace, name: str) -> None:
    (run_dir(workspace) / f"{name}.json").unlink(missing_ok=True)
    clear_problem(workspace, name)


def _problem_path(workspace: Workspace, name: str) -> Path:
    return run_dir(workspace) / f"{name}.problem"


def note_problem(workspace: Workspace, name: str, message: str) -> None:
    """Why the part `name` could not start (its port held by another program, say): kept until
    it starts or is forgotten, so a view of it can say so instead of a bare `down`."""
    if problem(workspace, name) != message:  # the watcher retries every few seconds
        write_whole(_problem_path(workspace, name), message)


def problem(workspace: Workspace, name: str) -> str | None:
    try:
        return _problem_path(workspace, name).read_text() or None
    except FileNotFoundError:
        return None


def clear_problem(workspace: Workspace, name: str) -> None:
    _problem_path(workspace, name).unlink(missing_ok=True)


def clear_problems(workspace: Workspace) -> None:
    """Every part's problem: nothing retries them once the platform is down."""
    for path in run_dir(workspace).glob("*.problem"):
        path.unlink(missing_ok=True)


def _members(record: ProcessRecord, spare: frozenset[int]) -> list[psutil.Process]:
    """The recorded process, its descendants, and whatever is left of its process group.

    Group members are those started after the recorded process (the group's id is its PID):
    a process of some other program never qualifies. A spared process and its descendants
    are left out.
    """
    found: dict[int, psutil.Process] = {}
    if is_running(record):
        with suppress(psutil.Error):
            found |= {p.pid: p for p in _descendants(psutil.Process(record.pid), spare)}
    for process in psutil.process_iter(["create_time"]):
        with suppress(psutil.Error, OSError):
            in_group = os.getpgid(process.pid) == record.pid
            started_after = process.info["create_time"] >= record.started_at - _SAME_START_SECONDS
            if in_group and started_after:
                found.setdefault(process.pid, process)
    return list(found.values())


def _descendants(process: psutil.Process, spare: frozenset[int]) -> list[psutil.Process]:
    """`process` and what it started, down to a spared process (left out with its own)."""
    found = [process]
    with suppress(psutil.Error):
        for child in process.children():
            if child.pid not in spare:
                found.extend(_descendants(child, spare))
    return found


def recorded_pids(workspace: Workspace) -> set[int]:
    """The PIDs of every recorded part that still runs."""
    folder = run_dir(workspace)
    records = (read_record(workspace, path.stem) for path in folder.glob("*.json"))
    return {r.pid for r in records if r is not None and is_running(r)} if folder.is_dir() else set()


def _write_record(workspace: Workspace, record: ProcessRecord) -> None:
    write_whole(run_dir(workspace) / f"{record.name}.json", json.dumps(asdict(record), indent=2))


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]
