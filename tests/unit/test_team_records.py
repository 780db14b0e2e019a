"""Team mode's records: secrets made once and only readable by their owner, and the workspace
a command on the stack's machine joins (`mlaas.stores.team`)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from mlaas.core.errors import SettingsError
from mlaas.stores.team import (
    TeamSecrets,
    TeamStack,
    joined,
    read_stack,
    secrets_path,
    team_part_names,
    write_stack,
)
from mlaas.stores.workspace import Workspace

STACK = TeamStack(
    postgres_port=15433,
    mlflow_url="http://127.0.0.1:15000",
    prefect_api_url="http://127.0.0.1:14200/api",
    workers=2,
)


def test_secrets_are_made_once_0600_and_read_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "team" / "secrets.json"
    made = TeamSecrets.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(set(json.loads(path.read_text()).values())) == 4
    assert all(len(secret) >= 32 for secret in json.loads(path.read_text()).values())
    assert TeamSecrets.load_or_create(path) == made


def test_a_secrets_file_with_loose_rights_is_closed_and_a_broken_one_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "secrets.json"
    made = TeamSecrets.load_or_create(path)
    path.chmod(0o644)
    assert TeamSecrets.load_or_create(path) == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text('{"postgres_password": "x"}')
    with pytest.raises(SettingsError, match="not a secrets file mlaas wrote"):
        TeamSecrets.load_or_create(path)


def test_a_secrets_file_from_before_the_prefect_password_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    older = {"postgres_password": "pg", "mlflow_password": "ml", "mlflow_session_key": "key"}
    path.write_text(json.dumps(older))
    made = TeamSecrets.load_or_create(path)
    assert (made.postgres_password, made.mlflow_password) == ("pg", "ml")
    assert len(made.prefect_password) >= 32
    assert TeamSecrets.load_or_create(path) == made  # written back, 0600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_client_environment_names_every_server_and_quotes_the_password() -> None:
    secrets = TeamSecrets("p@ss/word:1", "mlflow-pw", "key", "prefect-pw")
    environment = STACK.client_environment(secrets)
    assert environment["MLAAS_TRACKING_URI"] == "http://127.0.0.1:15000"
    assert environment["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert environment["MLFLOW_TRACKING_PASSWORD"] == "mlflow-pw"
    assert environment["PREFECT_API_URL"] == "http://127.0.0.1:14200/api"
    assert environment["PREFECT_API_AUTH_STRING"] == "admin:prefect-pw"
    assert environment["MLAAS_LOCK_URI"] == (
        "postgresql://mlaas:p%40ss%2Fword%3A1@127.0.0.1:15433/mlaas"
    )
    assert "key" not in environment.values()  # the UI's session key is the server's alone


def test_a_workspace_joins_the_stack_started_in_it_and_only_then(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    assert joined(workspace) == (workspace, {})
    assert team_part_names(workspace) == ([], [])
    write_stack(workspace, STACK)
    assert read_stack(workspace) == STACK
    assert joined(workspace) == (workspace, {})  # no secrets: nothing to sign in with
    secrets = TeamSecrets.load_or_create(secrets_path(workspace))
    team, environment = joined(workspace)
    assert team.tracking_uri == STACK.mlflow_url
    assert team.lock_uri == environment["MLAAS_LOCK_URI"]
    assert environment["MLFLOW_TRACKING_PASSWORD"] == secrets.mlflow_password
    assert team_part_names(workspace) == (["postgres"], ["worker-1", "worker-2"])
    # A tracking store chosen by the user wins over the stack.
    chosen = Workspace(tmp_path, "sqlite:////elsewhere/mlflow.db")
    assert joined(chosen) == (chosen, {})
