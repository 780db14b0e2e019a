"""Locks between processes that share one `$MLAAS_HOME`: two runs started at once take turns.

A lock is anything with `acquire(timeout)` and `release()` (the `Lock` protocol). Two kinds of
thing are guarded: this machine's files (a pipeline's work folder, Prefect's local API), always
with a file lock; and the tracking store (its set-up, the registry), with the lock that suits
the store: a file lock where the store is this machine's SQLite file, a PostgreSQL advisory lock
where it is a database shared by several machines (team mode).

File locks are advisory (`flock`) under `$MLAAS_HOME/locks/`: the operating system releases
them when their process dies, so a killed run never leaves a stale lock behind. PostgreSQL
frees an advisory lock when its holder's connection closes, which a dying process's does. No
lock is re-entrant: a holder must not take the same lock again (it would wait for itself).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from filelock import FileLock, Timeout

from mlaas.core.errors import LockTimeout, SettingsError, StoreUnavailable
from mlaas.stores.workspace import LOCK_URI_VARIABLE, Workspace, redacted

if TYPE_CHECKING:
    # Imported where used: only team mode needs the database driver.
    import psycopg

# Long enough for another process's register, promote and package (a Bento build) to finish.
REGISTRY_WAIT_SECONDS = 900.0
WAIT_FOREVER = -1.0
TRACKING_STORE_LOCK = "tracking-store"
PREFECT_API_LOCK = "prefect-api"
# How often a waiting PostgreSQL lock asks again: a tenth of a second to notice it is free.
_POLL_SECONDS = 0.1
_CONNECT_TIMEOUT_SECONDS = 10

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


class PostgresAdvisoryLock:
    """A PostgreSQL advisory lock: between the processes of every machine using one database.

    Each acquire opens a connection of its own, which holds the lock until `release` (or
    until it closes: the server then frees the lock, so a killed holder leaves none behind).
    """

    def __init__(self, uri: str, name: str) -> None:
        self.uri = uri
        self.name = name
        self.key = advisory_key(name)
        self._connection: psycopg.Connection[Any] | None = None

    @property
    def where(self) -> str:
        return f"{self.name} (a PostgreSQL advisory lock in {redacted(self.uri)})"

    def acquire(self, timeout: float) -> bool:
        if self._connection is not None:
            raise RuntimeError(f"lock {self.where} is already held by this process")
        connection = self._connect()
        deadline = None if timeout == WAIT_FOREVER else time.monotonic() + timeout
        try:
            while not _try_advisory_lock(connection, self.key):
                if deadline is not None and time.monotonic() >= deadline:
                    connection.close()
                    return False
                left = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
                time.sleep(max(0.0, min(_POLL_SECONDS, left)))
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return True

    def release(self) -> None:
        import psycopg

        connection, self._connection = self._connection, None
        if connection is None:
            return
        # A connection lost meanwhile has freed the lock already: closing is all that is left.
        with suppress(psycopg.Error):
            connection.execute("SELECT pg_advisory_unlock(%s)", [self.key])
        connection.close()

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(
                libpq_uri(self.uri),
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_SECONDS,
                application_name=f"mlaas lock {self.name}"[:63],
            )
        except psycopg.Error as error:
            reason = " ".join(str(error).split())
            password = urlsplit(self.uri).password
            if password:  # libpq does not quote it back; this makes sure
                for form in {password, unquote(password)}:
                    reason = reason.replace(form, "***")
            raise StoreUnavailable(
                f"cannot reach the database of lock {self.name!r} at {redacted(self.uri)} "
                f"({reason}): is PostgreSQL up there (`mlaas up --team` starts it), and are the "
                "host, port, user and password in that URL right?"
            ) from error


def advisory_key(name: str) -> int:
    """The advisory lock key of `name`: the first 8 bytes of its SHA-256, a signed bigint."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def libpq_uri(uri: str) -> str:
    """`uri` as libpq reads it: SQLAlchemy's `postgresql+psycopg://` loses its `+driver`."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))


def is_postgresql(uri: str) -> bool:
    return urlsplit(uri).scheme.split("+", 1)[0] == "postgresql"


def _try_advisory_lock(connection: psycopg.Connection[Any], key: int) -> bool:
    row = connection.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()
    return bool(row and row[0])


def store_lock(workspace: Workspace, name: str) -> Lock:
    """The lock `name` of the workspace's tracking store, of the kind its URI calls for.

    A workspace's lock database (team mode) holds the locks of every machine sharing the store,
    whatever the store is. Without one, a PostgreSQL store is shared by several machines and
    holds them itself. A SQLite store is one machine's file, and an MLflow server over http(s)
    without a lock database is reached from this machine alone: a file lock takes turns
    between this machine's processes.
    """
    lock_uri = workspace.lock_uri
    if lock_uri:
        if not is_postgresql(lock_uri):
            raise SettingsError(
                f"{LOCK_URI_VARIABLE}={redacted(lock_uri)!r}: locks shared between machines live "
                "in PostgreSQL; give postgresql://user:password@host:port/database"
            )
        return PostgresAdvisoryLock(lock_uri, name)
    if is_postgresql(workspace.tracking_uri):
        return PostgresAdvisoryLock(workspace.tracking_uri, name)
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
