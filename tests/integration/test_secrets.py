"""No secret set in the environment ends up in what a run stores or prints.

A tiny real pipeline runs through `mlaas run` in a private $MLAAS_HOME with recognisable secret
values in the variables people keep them in (API keys, cloud keys, tracking passwords, a database
URL with a password, a model-hub token). Then every byte the run left is searched: the MLflow
database and artifacts, Prefect's database and results, the BentoML store (bento.yaml included),
the pipeline folders, and the run's own stdout and stderr. (MLFLOW_TRACKING_USERNAME is not
among them: it is an identity, not a secret, and MLflow records it as the run's user by design.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import PROJECT_ROOT, shrink, write_params

from mlaas.core.settings import Settings

pytestmark = pytest.mark.slow

SECRETS = {
    "MLAAS_API_KEY": "mlaas-key-7Qx2Vb9Lr4",
    "AWS_ACCESS_KEY_ID": "AKIAFAKE7Q2V9L4R8XZT",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-Zt81pQw0Nn3K",
    "MLFLOW_TRACKING_PASSWORD": "tracker-pass-Gm6Yw1Sd",
    "MLFLOW_TRACKING_TOKEN": "tracker-token-Vc3Nf8Kj",
    "DATABASE_URL": "postgresql://dbuser:db-pass-Rk4Tz9Px@db.internal:5432/mlaas",
    "HF_TOKEN": "hf_fakeTokenWb2Lm7Qs",
    "GITHUB_TOKEN": "ghp_fakeTokenYd6Hc1Ua",
}


def secret_needles() -> dict[str, bytes]:
    """Each secret value, and for the database URL the password on its own."""
    needles = {name: value.encode() for name, value in SECRETS.items()}
    needles["DATABASE_URL password"] = b"db-pass-Rk4Tz9Px"
    return needles


def test_no_secret_reaches_the_stores_logs_or_output(
    project_settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    # One epoch: what a run stores is the same whatever the model learnt.
    settings = shrink(project_settings, "secrets", train={"max_epochs": 1})
    params = write_params(settings, tmp_path)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLAAS_", "PREFECT_"))
    }
    environment |= SECRETS | {"MLAAS_HOME": str(home), "PREFECT_LOGGING_LEVEL": "DEBUG"}
    finished = subprocess.run(
        [str(Path(sys.executable).parent / "mlaas"), "run", "--params", str(params)],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]

    files = [path for path in home.rglob("*") if path.is_file() and not path.is_symlink()]
    stored = {str(path.relative_to(home)): path.read_bytes() for path in files}
    stored |= {"stdout": finished.stdout, "stderr": finished.stderr}
    # The places the question is about are really there and were searched.
    names = "\n".join(stored)
    for expected in ("mlflow.db", "prefect/prefect.db", "bento.yaml", "pipelines/secrets/"):
        assert expected in names, f"no {expected} among the {len(files)} files searched"
    assert b"secrets" in finished.stdout + finished.stderr  # the run's log was captured
    assert b"mlaas.data_hash" in stored["mlflow.db"]  # the database's text is searchable as bytes

    leaks = [
        f"{secret} in {where}"
        for where, content in stored.items()
        for secret, needle in secret_needles().items()
        if needle in content
    ]
    print(f"searched {len(stored)} files, {sum(map(len, stored.values()))} bytes: {leaks}")
    assert leaks == [], leaks
