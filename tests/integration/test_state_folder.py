"""An unusable $MLAAS_HOME stops a run before any work, with a message that says why and what
to do: not writable, too little free space, or a disk that fills up during the run.

The real conditions are made, not mocked: a home below a regular file (unwritable even for
root), a read-only tmpfs, the free-space minimum set above what the disk has, and a 2 MB tmpfs
that a data set does not fit on. Mounting needs root in a container that allows it; those
cases are skipped elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from mlaas.core.errors import SettingsError
from mlaas.stores.workspace import MIN_FREE_MB_VARIABLE, Workspace, free_mb


@contextmanager
def tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs mounted on `folder` for the duration (skips the test where not allowed)."""
    folder.mkdir(parents=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no `mount` command here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def mlaas(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    executable = str(Path(sys.executable).parent / "mlaas")
    return subprocess.run(
        [executable, "--home", str(home), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def params_file(folder: Path, family: str = "image", source: str = "mnist") -> Path:
    path = folder / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {"pipeline": {"name": "state", "family": family}, "load": {"source": source}}
        )
    )
    return path


def test_a_home_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SettingsError, match=r"cannot write to MLAAS_HOME=.*a-file/home"):
        Workspace(blocker / "home").ensure_writable()


def test_the_cli_refuses_an_unwritable_home_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    finished = mlaas(blocker / "home", "stage", "load", "--params", str(params_file(tmp_path)))
    assert finished.returncode == 2, finished.stderr
    assert "cannot write to MLAAS_HOME" in finished.stderr
    assert "point MLAAS_HOME at a writable folder" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_a_read_only_home_is_refused(tmp_path: Path) -> None:
    read_only = tmpfs(tmp_path / "read-only", "ro", "size=1m")
    with read_only as home, pytest.raises(SettingsError, match="Read-only file system"):
        Workspace(home).ensure_writable()


def test_too_little_free_space_is_refused_with_both_figures(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.ensure_writable(min_free_mb=0)
    free = free_mb(workspace.home)
    needed = free + 1000
    with pytest.raises(SettingsError, match=MIN_FREE_MB_VARIABLE) as refused:
        workspace.ensure_writable(min_free_mb=needed)
    assert f"only {free:.0f} MB free" in str(refused.value)
    assert f"at least {needed:.0f} MB" in str(refused.value)
    monkeypatch.setenv(MIN_FREE_MB_VARIABLE, str(needed))
    with pytest.raises(SettingsError, match="MB free"):
        workspace.ensure_writable()
    monkeypatch.setenv(MIN_FREE_MB_VARIABLE, "lots")
    with pytest.raises(SettingsError, match="give a number of megabytes"):
        workspace.ensure_writable()


def test_the_cli_checks_free_space_before_loading(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=2m") as home:
        finished = mlaas(home, "stage", "load", "--params", str(params_file(tmp_path)))
        assert finished.returncode == 2, finished.stderr
        assert "only 2 MB free" in finished.stderr and "at least 500 MB" in finished.stderr
        assert not (home / "pipelines").exists()


def test_a_disk_that_fills_up_during_a_run_gives_a_clear_error(tmp_path: Path) -> None:
    # The preflight passes (0.25 MB asked, 0.5 MB free); then 5,000 MNIST images (1.1 MB as
    # parquet) do not fit.
    with tmpfs(tmp_path / "small", "size=512k") as home:
        finished = mlaas(
            home,
            "stage",
            "load",
            "--params",
            str(params_file(tmp_path)),
            **{MIN_FREE_MB_VARIABLE: "0.25"},
        )
    assert finished.returncode == 2, finished.stderr
    assert "is full" in finished.stderr and "No space left on device" in finished.stderr
    assert "Traceback" not in finished.stderr
