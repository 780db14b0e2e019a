"""Team mode's PostgreSQL cluster, made and run for real (one for the module), and the advisory
locks it holds: made once, password-guarded, the password in no command and no file, and locks
that keep a second holder out until released or until their holder is killed."""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from mlaas.core.errors import MlaasError
from mlaas.serving.processes import free_port
from mlaas.stores import postgres
from mlaas.stores.locks import PostgresAdvisoryLock, registry_lock
from mlaas.stores.postgres import (
    Cluster,
    answers,
    binaries,
    check_port_free,
    ensure_databases,
    initialise,
    server_command,
)
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow

MLAAS = str(Path(sys.executable).parent / "mlaas")
STARTS_WITHIN_SECONDS = 60.0
# Characters a URL must quote, so that every lock below also proves `Cluster.url` quotes them.
PASSWORD = f"p@ss:w/rd%?#{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Running:
    cluster: Cluster
    initdb_commands: list[list[str]]
    password_file_modes: list[int]
    server: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A cluster made by `initialise` (its commands recorded) and served by `server_command`."""
    cluster = Cluster(tmp_path_factory.mktemp("team") / "postgres" / "data", free_port(), PASSWORD)
    commands: list[list[str]] = []
    modes: list[int] = []
    real_run = subprocess.run

    def recording_run(command: list[str], **options: Any) -> Any:
        commands.append(list(command))
        for argument in command:
            if argument.startswith("--pwfile="):
                modes.append(stat.S_IMODE(Path(argument.split("=", 1)[1]).stat().st_mode))
        return real_run(command, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(postgres.subprocess, "run", recording_run)
        assert initialise(cluster)
    output = tmp_path_factory.mktemp("server") / "output.txt"
    with output.open("wb") as sink:
        server = subprocess.Popen(
            server_command(cluster), stdout=sink, stderr=subprocess.STDOUT, cwd="/"
        )
    try:
        deadline = time.monotonic() + STARTS_WITHIN_SECONDS
        while not answers(cluster):
            assert server.poll() is None, f"{output.read_text()}\n{postgres.log_tail(cluster)}"
            assert time.monotonic() < deadline, postgres.log_tail(cluster)
            time.sleep(0.2)
        yield Running(cluster, commands, modes, server)
    finally:
        server.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_newest_debian_postgresql_is_found() -> None:
    assert binaries() == Path("/usr/lib/postgresql/15/bin")


def test_initialise_runs_once_and_keeps_the_data(running: Running) -> None:
    cluster = running.cluster
    ensure_databases(cluster, ["kept"])
    version_written = (cluster.data_dir / "PG_VERSION").stat().st_mtime_ns
    assert initialise(cluster) is False
    assert (cluster.data_dir / "PG_VERSION").stat().st_mtime_ns == version_written
    assert ensure_databases(cluster, ["kept"]) == []


def test_initialise_opens_a_folder_above_that_was_closed_since(running: Running) -> None:
    """pytest re-secures its temporary root (0700) at each session's start: a cluster made
    before must still start, so each start lets `postgres` through the folders again."""
    above = running.cluster.data_dir.parent.parent
    above.chmod(0o700)
    assert initialise(running.cluster) is False
    assert above.stat().st_mode & stat.S_IXOTH


def test_the_password_is_needed(running: Running) -> None:
    cluster = running.cluster
    wrong = Cluster(cluster.data_dir, cluster.port, "not-" + PASSWORD)
    assert answers(cluster)
    assert not answers(wrong)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong.url("postgres"), connect_timeout=2).close()
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"postgresql://{cluster.user}@{cluster.host}:{cluster.port}/postgres")


def test_ensure_databases_creates_what_is_missing_owned_by_mlaas(running: Running) -> None:
    cluster = running.cluster
    assert ensure_databases(cluster, ["mlflow", "prefect"]) == ["mlflow", "prefect"]
    assert ensure_databases(cluster, ["mlflow", "prefect"]) == []
    with psycopg.connect(cluster.url("postgres")) as connection:
        owners = connection.execute(
            "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
            "WHERE d.datname IN ('mlflow', 'prefect') ORDER BY 1"
        ).fetchall()
    assert owners == [("mlflow", "mlaas"), ("prefect", "mlaas")]


def test_initdb_failing_is_explained_with_its_output(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "postgres" / "data", free_port(), "pw")
    cluster.data_dir.mkdir(parents=True)
    (cluster.data_dir / "not-a-cluster.txt").write_text("a folder initdb must not take over")
    with pytest.raises(MlaasError, match=r"(?s)initdb could not make.*exists but is not empty"):
        initialise(cluster)


def test_a_taken_port_is_refused_before_starting(running: Running) -> None:
    with pytest.raises(MlaasError, match=rf"port {running.cluster.port} on 127.0.0.1 is taken"):
        check_port_free(running.cluster)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root process hands the cluster over")
def test_under_root_the_cluster_belongs_to_postgres(running: Running) -> None:
    cluster = running.cluster
    server_user = pwd.getpwnam("postgres").pw_uid
    for path in (cluster.data_dir, cluster.socket_dir, cluster.log_file):
        assert path.stat().st_uid == server_user, path
    assert all(
        psutil.Process(child.pid).uids().real == server_user
        for child in psutil.Process(running.server.pid).children()
    )


def test_a_held_lock_keeps_out_a_second_holder_until_released(running: Running) -> None:
    url = running.cluster.url("postgres", driver="psycopg")
    first, second = PostgresAdvisoryLock(url, "registry-a"), PostgresAdvisoryLock(url, "registry-a")
    assert first.acquire(timeout=0)
    try:
        assert not second.acquire(timeout=0.5)
    finally:
        first.release()
    assert second.acquire(timeout=0.5)
    second.release()


def test_locks_of_different_names_do_not_block_each_other(running: Running) -> None:
    url = running.cluster.url("postgres", driver="psycopg2")
    first, other = PostgresAdvisoryLock(url, "registry-b"), PostgresAdvisoryLock(url, "registry-c")
    assert first.acquire(timeout=0)
    try:
        assert other.acquire(timeout=0)
        other.release()
    finally:
        first.release()


def test_a_killed_holder_leaves_no_lock_behind(running: Running) -> None:
    url = running.cluster.url("postgres")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from mlaas.stores.locks import PostgresAdvisoryLock; "
            "lock = PostgresAdvisoryLock(os.environ['LOCK_URL'], 'registry-d'); "
            "assert lock.acquire(timeout=30); print('held', flush=True); sys.stdin.read()",
        ],
        env={**os.environ, "LOCK_URL": url},  # the password stays off the command line
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        waiting = PostgresAdvisoryLock(url, "registry-d")
        assert not waiting.acquire(timeout=0.2)
        holder.kill()
        holder.wait()
        assert waiting.acquire(timeout=10)
        waiting.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_postgresql_tracking_store_locks_its_registry_in_the_database(
    running: Running, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path, running.cluster.url("mlflow", driver="psycopg2"))
    ensure_databases(running.cluster, ["mlflow"])
    outsider = PostgresAdvisoryLock(running.cluster.url("mlflow"), "registry-digits")
    with registry_lock(workspace, "digits"):
        assert not outsider.acquire(timeout=0)
    assert outsider.acquire(timeout=0)
    outsider.release()
    assert not (tmp_path / "locks").exists()


# Last: by now the log holds what every test above made the server write.
def test_the_password_is_on_no_command_line(running: Running) -> None:
    cluster = running.cluster
    assert running.password_file_modes == [0o600]
    postmaster = psutil.Process(running.server.pid)
    command_lines = [
        *running.initdb_commands,
        server_command(cluster),
        *(_command_line(process) for process in [postmaster, *postmaster.children()]),
    ]
    assert any("initdb" in " ".join(line) for line in command_lines)
    assert not [line for line in command_lines if PASSWORD in " ".join(line)]


def test_the_password_is_in_no_file_and_the_password_file_is_gone(running: Running) -> None:
    cluster = running.cluster
    # Touch the log with what might echo a password: a refused login and a lock's connection.
    answers(Cluster(cluster.data_dir, cluster.port, "wrong"))
    lock = PostgresAdvisoryLock(cluster.url("postgres"), "logged")
    assert lock.acquire(timeout=5)
    lock.release()
    folder = cluster.data_dir.parent
    assert {path.name for path in folder.iterdir()} == {"data", "socket", "postgres.log"}
    assert "password authentication failed" in cluster.log_file.read_text()
    assert not stat.S_IMODE(cluster.log_file.stat().st_mode) & 0o077
    holding_it = [
        path
        for path in folder.rglob("*")
        if path.is_file() and PASSWORD.encode() in path.read_bytes()
    ]
    assert holding_it == []


def _command_line(process: psutil.Process) -> list[str]:
    """What `ps` shows of `process`; nothing for a backend that has just exited."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_a_search_in_team_mode_keeps_its_trials_in_the_optuna_database(
    running: Running, project_settings: Any, tmp_path: Path
) -> None:
    """`mlaas stage tune` (DVC's driver) with two trials at once on a local Dask cluster, their
    study in the team's PostgreSQL: no journal file, and no password in the search's record."""
    import optuna
    from tests.conftest import shrink, write_params

    from mlaas.core.records import SearchResult
    from mlaas.stores.files import read_json
    from mlaas.stores.studies import JOURNAL_FILE, team_study_url

    ensure_databases(running.cluster, ["optuna", "mlaas"])
    lock_uri = running.cluster.url("mlaas")
    settings = shrink(
        project_settings,
        "team-search",
        pipeline={"family": "tabular"},
        load={"source": "breast_cancer"},
        train={"model": {"name": "logistic_regression"}},
        tune={"trials": 4, "parallel": 2},
    )
    params = write_params(settings, tmp_path)
    home = tmp_path / "home"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    environment = {**inherited, **Workspace(home).environment(), "MLAAS_LOCK_URI": lock_uri}
    for stage in ("load", "validate", "split", "tune"):
        done = subprocess.run(
            [MLAAS, "--home", str(home), "stage", stage, "--params", str(params)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    paths = Workspace(home).pipeline("team-search")
    record = paths.search_record.read_text()
    assert PASSWORD not in record
    search = SearchResult.model_validate(read_json(paths.search_record, "tune"))
    assert search.count("complete") == 4 and "***" in search.storage
    study = optuna.load_study(study_name=search.study, storage=team_study_url(lock_uri))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE"] * 4
    assert not (paths.tune_dir / JOURNAL_FILE).exists()
