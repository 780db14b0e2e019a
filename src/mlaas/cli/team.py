"""`mlaas up --team`: the platform on the servers a team shares, as processes on 127.0.0.1.

- PostgreSQL (Debian's package), a cluster of its own under `$MLAAS_HOME/team/postgres/`, with
  a database for MLflow, MLflow's users, Prefect, Optuna and the registry's locks;
- the MLflow server on it, with basic authentication and proxied artifacts (clients send and
  fetch them through the server, `mlflow-artifacts:/`, so no client needs the server's disk);
- the Prefect server on it, a `process` work pool, and workers that take the pool's runs, so
  runs of different pipelines run at the same time;
- the control API and its model servers, as in single mode, now clients of those servers.

Every client (the workers, the API, `mlaas run` on another machine) needs only URLs and
credentials: `mlaas.stores.team.TeamStack.client_environment`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from mlaas.cli.platform import (
    BIN_DIR,
    HOST,
    Part,
    Ports,
    api_part,
    deployments_part,
    mlflow_part,
    prefect_part,
)
from mlaas.control.prefect_api import basic_auth
from mlaas.orchestration.heartbeats import heartbeat_environment
from mlaas.stores import postgres
from mlaas.stores.team import (
    DATABASES,
    MLFLOW_ADMIN,
    POSTGRES_PART,
    POSTGRES_ROLE,
    TeamSecrets,
    TeamStack,
    secrets_path,
    team_dir,
    worker_name,
)
from mlaas.stores.workspace import Workspace

# Successful credential checks cached this long per MLflow worker: MLflow verifies a password
# by hashing it (about 0.2 s of CPU), which would otherwise be paid on every request.
MLFLOW_AUTH_CACHE_SECONDS = 60
# A training run takes a machine's cores: a worker runs one at a time, and two runs at once go
# to two workers (or machines). More at once: more workers (`--workers`), on more machines.
RUNS_PER_WORKER = 1


def team_stack(ports: Ports, workers: int) -> TeamStack:
    return TeamStack(
        postgres_port=ports.postgres,
        mlflow_url=f"http://{HOST}:{ports.mlflow}",
        prefect_api_url=f"http://{HOST}:{ports.prefect}/api",
        workers=workers,
    )


def cluster_of(
    workspace: Workspace, stack: TeamStack, team_secrets: TeamSecrets
) -> postgres.Cluster:
    return postgres.Cluster(
        data_dir=team_dir(workspace) / "postgres" / "data",
        port=stack.postgres_port,
        password=team_secrets.postgres_password,
        user=POSTGRES_ROLE,
    )


def team_parts(
    workspace: Workspace,
    ports: Ports,
    stack: TeamStack,
    deployed: Mapping[str, Path],
    max_upload_bytes: int,
    project_root: Path,
) -> list[Part]:
    """Every part of the team stack, in the order `up` starts them."""
    team_secrets = TeamSecrets.load_or_create(secrets_path(workspace))
    cluster = cluster_of(workspace, stack, team_secrets)
    password = team_secrets.postgres_password
    artifacts = team_dir(workspace) / "artifacts"
    auth_config = team_dir(workspace) / "mlflow-auth.ini"
    pool = stack.work_pool
    return [
        Part(
            POSTGRES_PART,
            ports.postgres,
            postgres.server_command(cluster),
            f"postgresql://{HOST}:{ports.postgres}",
            (),
            ready_check=lambda: _databases_ready(cluster),
            prepare=lambda: _initialise(cluster),
        ),
        mlflow_part(
            ports.mlflow,
            ["--app-name", "basic-auth", "--artifacts-destination", str(artifacts)],
            # In the environment, not on the command line: `ps` and the part's record show that.
            {
                "MLFLOW_BACKEND_STORE_URI": stack.postgres_url("mlflow", password, "psycopg"),
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": team_secrets.mlflow_session_key,
            },
            after=(POSTGRES_PART,),
            prepare=lambda: _write_auth_config(auth_config, stack, team_secrets),
        ),
        prefect_part(
            ports.prefect,
            {
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": stack.postgres_url(
                    "prefect", password, "asyncpg"
                ),
                # Basic authentication for every route but /health and /ready; the clients
                # send PREFECT_API_AUTH_STRING (`TeamStack.client_environment`).
                "PREFECT_SERVER_API_AUTH_STRING": team_secrets.prefect_auth,
            },
            after=(POSTGRES_PART,),
        ),
        deployments_part(
            workspace, ports.prefect, deployed, pool, prefect_auth=team_secrets.prefect_auth
        ),
        *(
            _worker_part(stack, worker_name(number), team_secrets.prefect_auth)
            for number in range(1, stack.workers + 1)
        ),
        api_part(workspace, ports, max_upload_bytes, project_root, ("mlflow",), stack.work_pool),
    ]


def _worker_part(stack: TeamStack, name: str, prefect_auth: str) -> Part:
    """A Prefect worker of the pool: each run it takes, in a process of its own. Restarted when
    it gives up (`mlaas.cli.respawn`): Prefect's worker exits after a few failed polls, e.g.
    while PostgreSQL restarts under the Prefect server."""
    registered_as = f"mlaas-{name}"
    return Part(
        name,
        None,
        [
            *(sys.executable, "-m", "mlaas.cli.respawn", "--"),
            str(BIN_DIR / "prefect"),
            *("worker", "start", "--pool", stack.work_pool, "--type", "process"),
            *("--name", registered_as, "--limit", str(RUNS_PER_WORKER)),
        ],
        f"{stack.prefect_api_url.removesuffix('/api')}/work-pools/work-pool/{stack.work_pool}",
        (),
        {"PREFECT_API_URL": stack.prefect_api_url, **heartbeat_environment()},
        # The deployments' process makes the pool: two workers making it at once would race.
        after=("deployments", "mlflow"),
        ready_check=_worker_registered(stack, registered_as, prefect_auth),
    )


def _worker_registered(stack: TeamStack, name: str, prefect_auth: str) -> Callable[[], bool]:
    def registered() -> bool:
        url = f"{stack.prefect_api_url}/work_pools/{stack.work_pool}/workers/filter"
        try:
            answer = httpx.post(url, json={}, headers=basic_auth(prefect_auth), timeout=5)
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and name in {w["name"] for w in answer.json()}

    return registered


def _initialise(cluster: postgres.Cluster) -> None:
    postgres.initialise(cluster)  # once: a cluster already made is left as it is


def _databases_ready(cluster: postgres.Cluster) -> bool:
    """Up, and with its databases: created the first time (before MLflow and Prefect start)."""
    if not postgres.answers(cluster):
        return False
    postgres.ensure_databases(cluster, DATABASES)
    return True


def _write_auth_config(path: Path, stack: TeamStack, team_secrets: TeamSecrets) -> None:
    """MLflow's basic-auth settings: users in PostgreSQL, the generated admin password. The file
    holds both passwords: written 0600, whole (a new file renamed over the old)."""
    users = stack.postgres_url("mlflow_auth", team_secrets.postgres_password, "psycopg")
    text = "\n".join(
        [
            "[mlflow]",
            # Signed in but not granted: nothing. Every mlaas client is the admin.
            "default_permission = NO_PERMISSIONS",
            f"database_uri = {users}",
            f"admin_username = {MLFLOW_ADMIN}",
            f"admin_password = {team_secrets.mlflow_password}",
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
            f"auth_cache_ttl_seconds = {MLFLOW_AUTH_CACHE_SECONDS}",
            "",
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    partial.replace(path)
