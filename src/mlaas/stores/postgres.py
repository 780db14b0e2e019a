"""The PostgreSQL cluster of team mode: made once under `$MLAAS_HOME`, run by `mlaas up --team`.

The server listens on 127.0.0.1 only and asks every client for the `mlaas` role's password
(scram-sha-256). Its unix socket and log lie beside the data folder, not in Debian's
/var/run/postgresql, which may be missing or belong to another cluster. PostgreSQL refuses to
run as root: a root process makes the cluster and runs the server as the OS user `postgres`.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import mkstemp
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlaas.core.errors import MlaasError

if TYPE_CHECKING:
    # Imported where used: the `mlaas` CLI starts without loading a database driver it may
    # not need (team mode only).
    import psycopg

DEBIAN_POSTGRESQL = Path("/usr/lib/postgresql")
SERVER_USER = "postgres"
CONNECT_TIMEOUT_SECONDS = 2
# The kernel's limit on a unix socket's path (sun_path, with its closing NUL).
_SOCKET_PATH_MAX = 107


@dataclass(frozen=True)
class Cluster:
    """A PostgreSQL cluster on this machine: its data folder, port and `mlaas` role."""

    data_dir: Path
    """initdb's folder; a folder of its own (`team/postgres/data`): socket and log go beside it."""
    port: int
    password: str = field(repr=False)
    """The `mlaas` role's password: the caller generates and keeps it."""
    user: str = "mlaas"
    host: str = "127.0.0.1"

    def url(self, database: str, driver: str = "") -> str:
        """postgresql[+driver]://mlaas:PASSWORD@127.0.0.1:PORT/database (password URL-quoted)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"{scheme}://{credentials}@{self.host}:{self.port}/{quote(database, safe='')}"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent / "socket"

    @property
    def log_file(self) -> Path:
        """The server's log (its logging collector writes it) after initdb's output."""
        return self.data_dir.parent / "postgres.log"


def binaries() -> Path:
    """The newest /usr/lib/postgresql/N/bin that has initdb and postgres."""
    versions = DEBIAN_POSTGRESQL.glob("*/bin") if DEBIAN_POSTGRESQL.is_dir() else iter(())
    numbered = [path for path in versions if path.parent.name.isdigit()]
    for folder in sorted(numbered, key=lambda path: int(path.parent.name), reverse=True):
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return folder
    raise MlaasError(
        f"no PostgreSQL server found in {DEBIAN_POSTGRESQL}/N/bin (team mode runs one): install "
        "Debian's `postgresql` package (`make install` does it, or `apt-get install postgresql`)"
    )


def initialise(cluster: Cluster) -> bool:
    """Make the cluster with initdb unless `data_dir` already holds one; whether initdb ran.

    The superuser role is `cluster.user` with `cluster.password`, which initdb reads from a
    0600 temporary file (never a command line, which `ps` shows to every user) deleted after.

    Either way the folders are made reachable for `postgres` again first: a folder above them
    may have been closed since the cluster was made (pytest re-secures its temporary root at
    each session's start; a user's chmod), and the server could not start without it.
    """
    _prepare_folders(cluster)
    if (cluster.data_dir / "PG_VERSION").exists():
        return False
    if "\n" in cluster.password or "\r" in cluster.password:
        raise ValueError("initdb reads the password's first line only: give one without breaks")
    initdb = binaries() / "initdb"
    with _password_file(cluster) as password_file:
        command = [
            *_as_server_user(),
            str(initdb),
            f"--pgdata={cluster.data_dir}",
            f"--username={cluster.user}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            # C: independent of which locales this machine has installed; MLflow and Prefect
            # need no language-aware sorting.
            "--locale=C",
            "--no-instructions",
        ]
        # cwd /: a root caller's current folder may be one `postgres` cannot enter.
        result = subprocess.run(command, capture_output=True, text=True, cwd="/", check=False)
    with cluster.log_file.open("a") as log:
        log.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise MlaasError(
            f"initdb could not make the PostgreSQL cluster in {cluster.data_dir} (exit "
            f"{result.returncode}):\n{_tail(result.stdout + result.stderr)}\nfix what it says "
            f"(free disk space, permissions of {cluster.data_dir.parent}), then run again"
        )
    return True


def server_command(cluster: Cluster) -> list[str]:
    """The foreground command that runs the server; SIGINT stops it fast (it is the server's
    own PID: `setpriv` replaces itself, where `runuser` would wait in between and ignore it)."""
    socket_path = cluster.socket_dir / f".s.PGSQL.{cluster.port}"
    # mlaas connects over TCP only; the socket is for `psql -h SOCKET_DIR` by hand, so a path
    # too long for the kernel goes without one rather than stopping the server.
    socket_dir = str(cluster.socket_dir) if len(str(socket_path)) <= _SOCKET_PATH_MAX else ""
    return [
        *_as_server_user(),
        str(binaries() / "postgres"),
        "-D",
        str(cluster.data_dir),
        "-p",
        str(cluster.port),
        "-k",
        socket_dir,
        "-c",
        f"listen_addresses={cluster.host}",
        # The collector starts before the server binds its port: "address already in use"
        # lands in the log too, whoever started the server and wherever its stderr goes.
        "-c",
        "logging_collector=on",
        "-c",
        f"log_directory={cluster.log_file.parent}",
        "-c",
        f"log_filename={cluster.log_file.name}",
        "-c",
        "log_rotation_age=0",
        "-c",
        "log_rotation_size=0",
    ]


def ensure_databases(cluster: Cluster, names: Sequence[str]) -> list[str]:
    """CREATE DATABASE for each of `names` not there yet (owned by `cluster.user`); those made."""
    import psycopg
    from psycopg import errors, sql

    created = []
    with _connect(cluster) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)", [list(names)]
        )
        present = {row[0] for row in rows}
        for name in (name for name in names if name not in present):
            statement = sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(cluster.user)
            )
            try:
                connection.execute(statement)
            except errors.DuplicateDatabase:  # another process made it since the query
                continue
            except psycopg.Error as error:
                raise MlaasError(
                    f"cannot create database {name!r} in the PostgreSQL cluster at "
                    f"{cluster.host}:{cluster.port}: {error}"
                ) from error
            created.append(name)
    return created


def answers(cluster: Cluster) -> bool:
    """Whether the server accepts the `mlaas` role into database `postgres` (within 2 s)."""
    import psycopg

    try:
        with _connect_raw(cluster):
            return True
    except psycopg.Error:
        return False


def check_port_free(cluster: Cluster) -> None:
    """Refuse a port another program listens on, before starting the server there."""
    with socket.socket() as probe:
        try:
            probe.bind((cluster.host, cluster.port))
        except OSError as error:
            raise MlaasError(
                f"port {cluster.port} on {cluster.host} is taken ({error.strerror}): stop the "
                "program using it (`ss -ltnp` names it) or give the cluster another port"
            ) from error


def log_tail(cluster: Cluster, lines: int = 20) -> str:
    """The end of the cluster's log, for errors about a server that did not start."""
    try:
        return _tail(cluster.log_file.read_text(errors="replace"), lines)
    except OSError:
        return f"(no log at {cluster.log_file})"


@contextmanager
def _connect(cluster: Cluster) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    import psycopg

    try:
        connection = _connect_raw(cluster)
    except psycopg.Error as error:
        raise MlaasError(
            f"cannot connect to the PostgreSQL cluster at {cluster.host}:{cluster.port} as "
            f"{cluster.user!r} ({' '.join(str(error).split())}): is it running (`mlaas up "
            f"--team`)? its log: {cluster.log_file}"
        ) from error
    with connection:
        yield connection


def _connect_raw(cluster: Cluster) -> psycopg.Connection[tuple[object, ...]]:
    import psycopg

    return psycopg.connect(
        host=cluster.host,
        port=cluster.port,
        user=cluster.user,
        password=cluster.password,
        dbname="postgres",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        autocommit=True,
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def _server_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise MlaasError(
            f"mlaas runs as root, and PostgreSQL refuses to: it runs as the OS user "
            f"{SERVER_USER!r}, which this machine lacks. Install Debian's `postgresql` package "
            "(it makes that user), or run mlaas as an ordinary user"
        ) from None


def _as_server_user() -> list[str]:
    """The prefix that runs a command as `postgres` when this process is root; else none."""
    if not _is_root():
        return []
    user = _server_user()
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]


def _prepare_folders(cluster: Cluster) -> None:
    """Make data folder, socket folder and log; under root, give them to `postgres`.

    `postgres` must also traverse every folder above the data folder. Folders made by
    `tempfile.mkdtemp` (test homes) or a root user's home are 0700: those get `o+x`, which
    lets others pass through to a path they already know but not list or read the folder.
    """
    parent = cluster.data_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for folder in (cluster.data_dir, cluster.socket_dir):
        folder.mkdir(mode=0o700, exist_ok=True)
    cluster.log_file.touch(mode=0o600)
    if not _is_root():
        return
    user = _server_user()
    for path in (cluster.data_dir, cluster.socket_dir, cluster.log_file):
        os.chown(path, user.pw_uid, user.pw_gid)
    for folder in (parent, *parent.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


@contextmanager
def _password_file(cluster: Cluster) -> Iterator[Path]:
    """A 0600 file holding the password, readable by initdb's user, removed afterwards."""
    descriptor, name = mkstemp(prefix=".pwfile-", dir=cluster.data_dir.parent)
    path = Path(name)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(cluster.password + "\n")
        if _is_root():
            user = _server_user()
            os.chown(path, user.pw_uid, user.pw_gid)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
