"""Locks between processes that share one `$MLAAS_HOME`: two runs started at once take turns.

A lock is anything with `acquire(timeout)` and `release()` (the `Lock` protocol). Two kinds of
thing are guarded: this machine's files (a pipeline's work folder, Prefect's local API), always
with a file lock; and the tracking store (its set-up, the registry), with the lock that suits
the store: a file lock where the store is this machine's SQLite file, a PostgreSQL advisory lock
where it is a database shared by several machines (team mode, not available yet).

File locks are advisory (`flock`) under `$MLAAS_HOME/locks/`: the operating system releases
them when their process dies, so a killed run never leaves a stale lock behind. No lock is
re-entrant: a holder must not take the same lock again (it would wait for itself).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from filelock import FileLock, Timeout

from mlaas.core.errors import LockTimeout, SettingsError
from mlaas.stores.workspace import TRACKING_URI_VARIABLE, Workspace

# Long enough for another process's register, promote and package (a Bento build) to finish.
REGISTRY_WAIT_SECONDS = 900.0
WAIT_FOREVER = -1.0
TRACKING_STORE_LOCK = "tracking-store"
PREFECT_API_LOCK = "prefect-api"

_logger = logging.getLogger(__name__)


class Lock(Protocol):
    """A lock between processes."""

    @property
    def where(self) -> str:
        """What messages name as the lock (a file, a database)."""
        ...

    def acquire(self, timeout: float) -> bool:
        """Take the lock within `timeout` seconds (WAIT_FOREVER: no limit); False if not."""
        ...

    def release(self) -> None: ...


class LocalFileLock:
    """An `flock` on a file: between the processes of one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(path)

    @property
    def where(self) -> str:
        return str(self.path)

    def acquire(self, timeout: float) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=timeout)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


def lock_path(workspace: Workspace, name: str) -> Path:
    return workspace.home / "locks" / f"{name}.lock"


def local_lock(workspace: Workspace, name: str) -> Lock:
    """The lock `name` of this machine's files under the workspace."""
    return LocalFileLock(lock_path(workspace, name))


def store_lock(workspace: Workspace, name: str) -> Lock:
    """The lock `name` of the workspace's tracking store, of the kind its URI calls for.

    A SQLite store is one machine's file: a file lock guards it. An MLflow server over http(s)
    is reached from this machine alone until team mode: a file lock takes turns between this
    machine's processes, as with SQLite. A PostgreSQL store is shared by several machines and
    needs a lock they all see (a PostgreSQL advisory lock): that comes with team mode.
    """
    uri = workspace.tracking_uri
    if urlsplit(uri).scheme.split("+", 1)[0] == "postgresql":
        raise SettingsError(
            f"{TRACKING_URI_VARIABLE}={workspace.tracking_location}: a PostgreSQL tracking store "
            "needs locks shared between machines (PostgreSQL advisory locks), which are not "
            "available yet: team mode. Use the SQLite store under MLAAS_HOME (unset "
            f"{TRACKING_URI_VARIABLE}) or an MLflow server over http(s) for now"
        )
    return local_lock(workspace, name)


@contextmanager
def holding(
    lock: Lock, purpose: str, wait_seconds: float = REGISTRY_WAIT_SECONDS
) -> Iterator[None]:
    """Hold `lock`; `purpose` says what the holder is doing, for the message shown while
    waiting and for the error when `wait_seconds` run out."""
    if not lock.acquire(timeout=0):
        _logger.warning("waiting for another mlaas process %s (lock %s)", purpose, lock.where)
        if not lock.acquire(timeout=wait_seconds):
            raise LockTimeout(
                f"waited {wait_seconds:.0f} s for another mlaas process {purpose} "
                f"(lock {lock.where}); let it finish, then run again"
            )
    try:
        yield
    finally:
        lock.release()


def workspace_lock(
    workspace: Workspace, name: str, purpose: str, wait_seconds: float = REGISTRY_WAIT_SECONDS
) -> AbstractContextManager[None]:
    """Hold the lock `name` of this machine's files under the workspace (see `holding`)."""
    return holding(local_lock(workspace, name), purpose, wait_seconds)


def tracking_store_lock(
    workspace: Workspace, name: str, purpose: str, wait_seconds: float = REGISTRY_WAIT_SECONDS
) -> AbstractContextManager[None]:
    """Hold the lock `name` of the workspace's tracking store (see `store_lock`, `holding`)."""
    return holding(store_lock(workspace, name), purpose, wait_seconds)


def run_lock(workspace: Workspace, pipeline: str) -> AbstractContextManager[None]:
    """One run (or stage) of a pipeline at a time: its stages share one work folder under
    `$MLAAS_HOME/pipelines/` (data, splits, checkpoints, model), which two runs would mix."""
    workspace.pipeline(pipeline)  # refuses a name that would put the lock file elsewhere
    return workspace_lock(
        workspace, f"run-{pipeline}", f"running pipeline {pipeline!r}", WAIT_FOREVER
    )


def registry_lock(workspace: Workspace, pipeline: str) -> AbstractContextManager[None]:
    """One process at a time writes a pipeline's registered model (register, promote, package,
    rollback): versions are numbered in turn, and promotion decides against the champion as
    it is at that moment."""
    workspace.pipeline(pipeline)
    return tracking_store_lock(
        workspace, f"registry-{pipeline}", f"registering or promoting {pipeline!r}"
    )
