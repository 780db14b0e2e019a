"""PostgreSQL advisory locks without a server: how a lock is named, keyed and chosen, and what a
database that cannot be reached says. Holding and freeing them against a real server:
tests/integration/test_postgres_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas.core.errors import MlaasError, SettingsError
from mlaas.serving.processes import free_port
from mlaas.stores.locks import (
    PostgresAdvisoryLock,
    advisory_key,
    libpq_uri,
    store_lock,
)
from mlaas.stores.workspace import Workspace

SECRET = "s3cret-Qv7"


def test_keys_are_signed_bigints_that_differ_by_name() -> None:
    keys = {advisory_key(f"registry-{n}") for n in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert any(key < 0 for key in keys)  # the whole signed range is used, not half of it
    assert advisory_key("registry-digits") == advisory_key("registry-digits")


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg", "postgresql+psycopg2"])
def test_sqlalchemy_driver_names_are_dropped_for_libpq(scheme: str) -> None:
    uri = f"{scheme}://mlaas:{SECRET}@db.example:5432/mlflow?sslmode=require"
    assert libpq_uri(uri) == f"postgresql://mlaas:{SECRET}@db.example:5432/mlflow?sslmode=require"


def test_a_lock_names_itself_and_its_database_without_the_password() -> None:
    lock = PostgresAdvisoryLock(f"postgresql://mlaas:{SECRET}@db.example/mlflow", "registry-x")
    assert lock.where == (
        "registry-x (a PostgreSQL advisory lock in postgresql://mlaas:***@db.example/mlflow)"
    )


def test_a_database_that_cannot_be_reached_is_explained_without_the_password() -> None:
    uri = f"postgresql+psycopg2://mlaas:{SECRET}@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(MlaasError, match=r"is PostgreSQL up there") as refused:
        PostgresAdvisoryLock(uri, "registry-digits").acquire(timeout=0)
    message = str(refused.value)
    assert "registry-digits" in message
    assert "postgresql+psycopg2://mlaas:***@127.0.0.1" in message
    assert SECRET not in message


def test_a_postgresql_tracking_store_holds_its_own_locks(tmp_path: Path) -> None:
    uri = f"postgresql://mlaas:{SECRET}@db.example/mlflow"
    lock = store_lock(Workspace(tmp_path, uri), "registry-digits")
    assert isinstance(lock, PostgresAdvisoryLock)
    assert (lock.uri, lock.name) == (uri, "registry-digits")


def test_a_lock_database_holds_the_locks_whatever_the_store(tmp_path: Path) -> None:
    lock_uri = f"postgresql://mlaas:{SECRET}@db.example/locks"
    for tracking in (None, "http://127.0.0.1:5000", "postgresql://mlaas@db.example/mlflow"):
        workspace = Workspace(tmp_path, tracking, lock_uri=lock_uri)
        lock = store_lock(workspace, "registry-digits")
        assert isinstance(lock, PostgresAdvisoryLock)
        assert lock.uri == lock_uri


def test_a_lock_database_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path, lock_uri=f"mysql://mlaas:{SECRET}@db/locks")
    with pytest.raises(SettingsError, match=r"MLAAS_LOCK_URI=.*give postgresql://") as refused:
        store_lock(workspace, "registry-digits")
    assert SECRET not in str(refused.value)
