"""Locks are chosen by the tracking store: `flock` files under $MLAAS_HOME/locks/ for this
machine's files and for a SQLite store (or a tracking server reached from this machine alone);
PostgreSQL advisory locks where several machines share the store (test_postgres_lock.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlaas.core.errors import LockTimeout
from mlaas.stores.locks import (
    LocalFileLock,
    holding,
    lock_path,
    registry_lock,
    store_lock,
)
from mlaas.stores.workspace import Workspace


@pytest.mark.parametrize(
    "uri", [None, "sqlite:////tmp/elsewhere/mlflow.db", "http://127.0.0.1:5000"]
)
def test_a_store_on_this_machine_is_locked_with_a_file_under_the_workspace(
    uri: str | None, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path, uri)
    lock = store_lock(workspace, "registry-digits")
    assert isinstance(lock, LocalFileLock)
    assert lock.where == str(tmp_path / "locks" / "registry-digits.lock")
    with registry_lock(workspace, "digits"):
        assert lock_path(workspace, "registry-digits").exists()


def test_a_lock_held_by_another_process_times_out_naming_it(tmp_path: Path) -> None:
    path = lock_path(Workspace(tmp_path), "busy")
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        expected = rf"waited 0 s .* testing \(lock {re.escape(str(path))}\)"
        with (
            pytest.raises(LockTimeout, match=expected),
            holding(LocalFileLock(path), "testing", wait_seconds=0.2),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with holding(LocalFileLock(path), "testing", wait_seconds=5):
        pass  # released by the operating system when its holder died
