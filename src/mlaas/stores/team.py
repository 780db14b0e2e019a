"""Team mode's records on the machine that runs the stack (`mlaas up --team`), under
`$MLAAS_HOME/team/`:

- `secrets.json` (mode 0600, made on the first `up --team`): the PostgreSQL role's password,
  the MLflow admin's, the MLflow UI's session key and the Prefect API's password, generated.
  They reach the servers through environment variables and 0600 files, never a command line,
  a log, a tag or a Bento.
- `stack.json`: where the stack's servers listen, and nothing secret. Commands run on this
  machine (`mlaas status`, `train`, `run`) read both and join the stack (`joined`); a second
  machine is given the same variables by hand (`client_environment`, the README's team section).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote

from mlaas.core.errors import SettingsError
from mlaas.stores.files import write_whole
from mlaas.stores.workspace import LOCK_URI_VARIABLE, TRACKING_URI_VARIABLE, Workspace

WORK_POOL = "mlaas"
MLFLOW_ADMIN = "admin"
PREFECT_USER = "admin"
POSTGRES_ROLE = "mlaas"
# One database per server, and one whose advisory locks guard the registry (and, with the
# tuning issue, Optuna's studies).
DATABASES = ("mlflow", "mlflow_auth", "prefect", "optuna", "mlaas")
LOCK_DATABASE = "mlaas"
# The parts `mlaas up --team` adds to single mode's (`mlaas.cli.team`).
POSTGRES_PART = "postgres"


@dataclass(frozen=True)
class TeamSecrets:
    postgres_password: str
    mlflow_password: str
    mlflow_session_key: str
    """Signs the MLflow UI's sessions and CSRF tokens (the same for each of its workers)."""
    prefect_password: str = ""
    """The Prefect API's (basic authentication, user `admin`). Empty in a secrets file from
    before it was asked for: generated then, and the file written again."""

    @classmethod
    def load_or_create(cls, path: Path) -> TeamSecrets:
        """The stack's secrets, generated (and written 0600) the first time."""
        if path.exists():
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)  # copied in with looser rights: closed again before use
            try:
                loaded = cls(**json.loads(path.read_text()))
            except (ValueError, TypeError) as error:
                raise SettingsError(
                    f"{path} is not a secrets file mlaas wrote ({error}): restore it, or stop "
                    "the team stack and delete the team folder to start it afresh"
                ) from None
            if loaded.prefect_password:
                return loaded
            made = replace(loaded, prefect_password=secrets.token_urlsafe(24))
        else:
            made = cls(*(secrets.token_urlsafe(24) for _ in range(4)))
        _write_private(path, json.dumps(asdict(made)))
        return made

    @property
    def prefect_auth(self) -> str:
        """What Prefect's PREFECT_SERVER_API_AUTH_STRING and PREFECT_API_AUTH_STRING hold."""
        return f"{PREFECT_USER}:{self.prefect_password}"


def _write_private(path: Path, text: str) -> None:
    """Write `path` whole, 0600 from before the first byte: never readable by others, even
    briefly, and never half-written (a new file renamed over the old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.replace(path)


@dataclass(frozen=True)
class TeamStack:
    """Where the team stack's servers listen (`stack.json`)."""

    postgres_port: int
    mlflow_url: str
    prefect_api_url: str
    workers: int
    """How many Prefect workers this machine runs (`worker-1`, ...)."""
    work_pool: str = WORK_POOL

    def postgres_url(self, database: str, password: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return (
            f"{scheme}://{POSTGRES_ROLE}:{quote(password, safe='')}@127.0.0.1:"
            f"{self.postgres_port}/{database}"
        )

    def client_environment(self, team_secrets: TeamSecrets) -> dict[str, str]:
        """What a client (a worker, the control API, `mlaas run` on any machine) needs to use
        the stack: the tracking server and its credentials, the registry's lock database, the
        Prefect API."""
        return {
            TRACKING_URI_VARIABLE: self.mlflow_url,
            "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
            "MLFLOW_TRACKING_PASSWORD": team_secrets.mlflow_password,
            LOCK_URI_VARIABLE: self.postgres_url(LOCK_DATABASE, team_secrets.postgres_password),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_API_AUTH_STRING": team_secrets.prefect_auth,
        }


def team_dir(workspace: Workspace) -> Path:
    return workspace.home / "team"


def secrets_path(workspace: Workspace) -> Path:
    return team_dir(workspace) / "secrets.json"


def stack_path(workspace: Workspace) -> Path:
    return team_dir(workspace) / "stack.json"


def read_stack(workspace: Workspace) -> TeamStack | None:
    """The stack `mlaas up --team` started in this workspace; None if it never did."""
    try:
        return TeamStack(**json.loads(stack_path(workspace).read_text()))
    except OSError:  # none, or a home that is not a folder (ensure_writable explains that)
        return None
    except (ValueError, TypeError):
        return None


def write_stack(workspace: Workspace, stack: TeamStack) -> None:
    write_whole(stack_path(workspace), json.dumps(asdict(stack), indent=2))


def joined(workspace: Workspace) -> tuple[Workspace, dict[str, str]]:
    """The workspace as a command on this machine should use it, and the variables to export:
    the team stack's tracking server, locks and credentials when `mlaas up --team` started one
    here and no tracking store was chosen (`MLAAS_TRACKING_URI`); else `workspace`, unchanged."""
    stack = read_stack(workspace)
    if stack is None or workspace.store_uri is not None or not secrets_path(workspace).exists():
        return workspace, {}
    environment = stack.client_environment(TeamSecrets.load_or_create(secrets_path(workspace)))
    team = Workspace(
        workspace.home, environment[TRACKING_URI_VARIABLE], environment[LOCK_URI_VARIABLE]
    )
    return team, environment


def worker_name(number: int) -> str:
    return f"worker-{number}"


def team_part_names(workspace: Workspace) -> tuple[list[str], list[str]]:
    """The team stack's own parts besides single mode's, if it was started here: those that
    start first (PostgreSQL), and the workers."""
    stack = read_stack(workspace)
    if stack is None:
        return [], []
    return [POSTGRES_PART], [worker_name(n) for n in range(1, stack.workers + 1)]
