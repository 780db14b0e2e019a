"""Locks between processes that share one `$MLAAS_HOME`: two runs started at once take turns.

They are advisory file locks (`flock`) under `$MLAAS_HOME/locks/`: the operating system releases
them when their process dies, so a killed run never leaves a stale lock behind. None of them is
re-entrant: a holder must not take the same lock again (it would wait for itself).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mlaas.core.errors import LockTimeout
from mlaas.stores.workspace import Workspace

# Long enough for another process's register, promote and package (a Bento build) to finish.
REGISTRY_WAIT_SECONDS = 900.0
WAIT_FOREVER = -1.0
TRACKING_STORE_LOCK = "tracking-store"
PREFECT_API_LOCK = "prefect-api"

_logger = logging.getLogger(__name__)


def lock_path(workspace: Workspace, name: str) -> Path:
    return workspace.home / "locks" / f"{name}.lock"


@contextmanager
def workspace_lock(
    workspace: Workspace, name: str, purpose: str, wait_seconds: float = REGISTRY_WAIT_SECONDS
) -> Iterator[None]:
    """Hold the lock `name` of this workspace; `purpose` says what the holder is doing, for
    the message shown while waiting and for the error when `wait_seconds` run out."""
    path = lock_path(workspace, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _logger.warning("waiting for another mlaas process %s (lock %s)", purpose, path)
        try:
            lock.acquire(timeout=wait_seconds)
        except Timeout:
            raise LockTimeout(
                f"waited {wait_seconds:.0f} s for another mlaas process {purpose} "
                f"(lock {path}); let it finish, then run again"
            ) from None
    try:
        yield
    finally:
        lock.release()


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
    return workspace_lock(
        workspace, f"registry-{pipeline}", f"registering or promoting {pipeline!r}"
    )
