"""The tracking store down or unwritable: the run stops before any work with a message naming
MLflow's tracking store, and a registration or promotion cut short leaves nothing half-made.

Faults are real: the SQLite file replaced by bytes that are not a database, a folder where the
file should be, the file made immutable (`chattr +i`, which stops root too), and the database
itself refusing one kind of write (a trigger that aborts it) between two steps of a stage.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.conftest import shrink, write_params

from mlaas.core.errors import TrackingStoreUnavailable
from mlaas.core.settings import Settings
from mlaas.stages.promote import DECISION_TAG
from mlaas.stages.table import run_stage
from mlaas.stores.registry import CHAMPION, Registry, check_tracking_store
from mlaas.stores.workspace import Workspace

BEFORE_REGISTER = ("load", "validate", "split", "train", "evaluate")


def _database(workspace: Workspace) -> Path:
    return workspace.home / "mlflow.db"


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a SQLite database\n" * 200)


def _folder(path: Path) -> None:
    path.mkdir()


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """Makes a file immutable (chattr +i); skips where the file system or privileges do not
    allow it. Undone afterwards, or the temporary folder could not be deleted."""
    made: list[Path] = []

    def make(path: Path) -> None:
        sqlite3.connect(path).execute("CREATE TABLE existing (x)").connection.commit()
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not possible here: {done.stderr.decode().strip()}")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("breakage", ["garbage", "folder", "immutable"])
def test_an_unusable_store_is_named_before_any_work(
    breakage: str, workspace: Workspace, immutable: Callable[[Path], None]
) -> None:
    workspace.home.mkdir(parents=True)
    break_store = {"garbage": _garbage, "folder": _folder, "immutable": immutable}[breakage]
    break_store(_database(workspace))
    with pytest.raises(TrackingStoreUnavailable) as raised:
        check_tracking_store(workspace, "faults")
    message = str(raised.value)
    assert f"MLflow tracking store at {workspace.tracking_uri}" in message
    assert "writable SQLite database" in message


@pytest.mark.slow
def test_a_run_on_a_damaged_store_stops_before_training(
    project_settings: Settings, tmp_path: Path
) -> None:
    settings = shrink(project_settings, "faults")
    params = write_params(settings, tmp_path)
    workspace = Workspace(tmp_path / "home")
    workspace.home.mkdir()
    _garbage(_database(workspace))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mlaas"), "run", "--params", str(params)],
        env={**env, "MLAAS_HOME": str(workspace.home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"MLflow tracking store at {workspace.tracking_uri}" in done.stderr
    assert "is not a database" in done.stderr
    paths = workspace.pipeline("faults")
    assert not paths.dataset.exists() and not paths.train_dir.exists()


def _refuse(workspace: Workspace, table: str, when: str) -> None:
    """From now on the database aborts matching inserts into `table`, as a failing store would."""
    with sqlite3.connect(_database(workspace)) as connection:
        connection.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN {when} "
            "BEGIN SELECT RAISE(ABORT, 'injected fault: the store refused the write'); END"
        )


def _accept(workspace: Workspace, table: str) -> None:
    with sqlite3.connect(_database(workspace)) as connection:
        connection.execute(f"DROP TRIGGER refuse_{table}")


@pytest.mark.slow
def test_registration_and_promotion_cut_short_leave_nothing_half_made(
    project_settings: Settings, workspace: Workspace
) -> None:
    settings = shrink(project_settings, "faults", train={"max_epochs": 1})
    for stage in BEFORE_REGISTER:
        run_stage(stage, settings, workspace)
    registry = Registry(workspace)

    # The version is created, then the store refuses the next write (the run's version tag).
    _refuse(workspace, "tags", "NEW.key = 'mlaas.version'")
    with pytest.raises(TrackingStoreUnavailable) as raised:
        run_stage("register", settings, workspace)
    assert "failed while registering faults v1, which was deleted again" in str(raised.value)
    assert f"MLflow tracking store at {workspace.tracking_uri}" in str(raised.value)
    assert registry.versions("faults") == []

    _accept(workspace, "tags")
    registration = run_stage("register", settings, workspace)
    version = registration.version.version  # type: ignore[attr-defined]
    assert registry.versions("faults") == [version]

    # The decision is tagged, then the store refuses the alias: the tag is taken back.
    _refuse(workspace, "registered_model_aliases", "1")
    with pytest.raises(TrackingStoreUnavailable) as raised:
        run_stage("promote", settings, workspace)
    assert f"failed while promoting faults v{version} (nothing was changed)" in str(raised.value)
    assert DECISION_TAG not in registry.version_tags("faults", version)
    assert registry.aliases("faults") == {}
    assert registry.champion_history("faults") is None

    # Once the store accepts writes again, running the stage again completes it.
    _accept(workspace, "registered_model_aliases")
    promotion = run_stage("promote", settings, workspace)
    assert promotion.decided_now is True  # type: ignore[attr-defined]
    assert registry.aliases("faults") == {CHAMPION: version}
    assert registry.champion_history("faults") == [version]
