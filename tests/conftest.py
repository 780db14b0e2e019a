"""Shared test set-up: one temporary MLAAS_HOME for the session, and the real settings shrunk.

The workspace's environment is applied here, at import, before any test module imports Prefect,
MLflow or BentoML (they read their homes when first imported): nothing touches the user's
`.mlaas/` or home directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlaas.core.settings import Settings, load_settings
from mlaas.serving.processes import free_port, served
from mlaas.stores.workspace import Workspace, apply_environment

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SESSION_HOME = Path(tempfile.mkdtemp(prefix="mlaas-test-home-"))
SESSION_WORKSPACE = Workspace(SESSION_HOME)
apply_environment(SESSION_WORKSPACE)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


# The session fixtures that train and serve the shared digits pipeline (about three minutes).
SHARED_SESSION_FIXTURES = ("pipeline_run", "digits_server", "family_servers")
SHARED_GROUP = "shared-digits-pipeline"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs `pytest -n 3`: each module's tests go to one worker (its module
    fixtures are set up once), and so do all the modules that name a shared session fixture
    (the pipeline is trained once, not on each worker). Modules go out in file order, so the
    long end-to-end ones start first. xdist's own `--dist loadgroup` cannot do this with
    pytest 9.2 (it renames `item._nodeid`, which pytest no longer reads)."""
    from xdist.scheduler import LoadScopeScheduling

    tests = PROJECT_ROOT / "tests"
    sharing = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in tests.rglob("test_*.py")
        if any(name in path.read_text() for name in SHARED_SESSION_FIXTURES)
    }

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return SHARED_GROUP if module in sharing else module

    config.option.loadscopereorder = False
    return ModuleScheduling(config, log)


def shrink(settings: Settings, name: str, **overrides: Any) -> Settings:
    """The project's real params.yaml, shrunk to seconds: sklearn digits, a tiny CNN, CPU."""
    params = settings.as_params()
    params["pipeline"].update(name=name)
    params["load"].update(source="digits")
    params["validate"].update(min_rows=100)
    params["train"].update(
        max_epochs=6,
        batch_size=32,
        learning_rate=0.005,
        accelerator="cpu",
        devices=1,
        model={
            "name": "cnn",
            "conv_channels": [16],
            "kernel_size": 3,
            "hidden_units": 64,
            "dropout": 0.1,
            "augment_max_shift": 1,  # exercises augmentation on 2-D (grey) instances
        },
    )
    params["package"].update(
        bentofile=str(PROJECT_ROOT / "bentofile.yaml"),
        build_context=str(PROJECT_ROOT / "src"),
    )
    for section, values in overrides.items():
        params[section] = {**params[section], **values}
    return Settings.model_validate(params)


@pytest.fixture
def untrained_recommender() -> tuple[Any, Any]:
    """A matrix factorisation model, untrained, over 12 users who each rated items a, b, c
    (5, 4, 1): enough for the ranking metrics' code paths, in milliseconds."""
    import pandas as pd
    import pyarrow as pa

    from mlaas.core.model_settings import MatrixFactorizationSettings
    from mlaas.core.settings import LoadSettings
    from mlaas.families.recommendation import RecommendationFamily
    from mlaas.families.recommendation_models import BiasedMatrixFactorization, IdIndex
    from mlaas.modeling.models import NetworkModel

    users = [f"u{n}" for n in range(12) for _ in range(3)]
    ratings = pd.DataFrame(
        {"user_id": users, "item_id": ["a", "b", "c"] * 12, "rating": [5.0, 4.0, 1.0] * 12}
    )
    index = IdIndex().fit(ratings[["user_id", "item_id"]])
    settings = MatrixFactorizationSettings(factors=2)
    card = RecommendationFamily().model_card(
        pa.Table.from_pandas(ratings), LoadSettings(source="movielens_100k"), settings
    )
    network = BiasedMatrixFactorization(index.user_count, index.item_count, settings, mean=3.0)
    return NetworkModel(card, index, network), ratings


@pytest.fixture(scope="session")
def project_settings() -> Settings:
    return load_settings(PROJECT_ROOT / "params.yaml")


@pytest.fixture(scope="session")
def tiny_settings(project_settings: Settings) -> Settings:
    return shrink(project_settings, "digits-test")


@pytest.fixture(scope="session")
def session_workspace() -> Workspace:
    return SESSION_WORKSPACE


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A private workspace for tests that write stage outputs but need no shared store."""
    return Workspace(tmp_path / "mlaas-home")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_params(settings: Settings, folder: Path) -> Path:
    import yaml

    path = folder / f"{settings.pipeline.name}.yaml"
    path.write_text(yaml.safe_dump(settings.as_params(), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def pipeline_run(
    prefect_server: None, tiny_settings: Settings, session_workspace: Workspace
) -> dict[str, Any]:
    """The whole training_pipeline flow, once per session, on digits in the session workspace."""
    from flows.training_pipeline import training_pipeline

    params = write_params(tiny_settings, SESSION_HOME)
    result = training_pipeline(params=str(params), home=str(session_workspace.home))
    return {"result": result, "params": params, "settings": tiny_settings}


@dataclass(frozen=True)
class Running:
    """A server the session started: its base URL and the file its output goes to."""

    url: str
    log: Path


Start = Callable[[Path, Workspace, Path], Future[Running]]


@contextmanager
def started_side_by_side() -> Iterator[Start]:
    """`start(params, workspace, log)` begins `served(...)` on a thread and returns at once: a
    server loads in its own processes while the caller trains the next pipeline. Every server
    that came up is stopped on exit, whether or not the others did."""
    up: list[AbstractContextManager[str]] = []
    lock = threading.Lock()

    def serve(params: Path, workspace: Workspace, log: Path) -> Running:
        server = served(params, workspace, log)
        url = server.__enter__()
        with lock:
            up.append(server)
        return Running(url, log)

    pool = ThreadPoolExecutor(max_workers=4)
    try:
        yield lambda params, workspace, log: pool.submit(serve, params, workspace, log)
    finally:
        pool.shutdown(wait=True)  # starts under way end, up or failed, before any server stops
        with ExitStack() as stack:
            for server in up:
                stack.push(server)


@pytest.fixture(scope="session")
def digits_server(
    pipeline_run: dict[str, Any],
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    """One server of the session's digits pipeline, for every module that only sends it
    requests (a server takes seconds to start)."""
    log = tmp_path_factory.mktemp("digits-server") / "serve.log"
    with served(pipeline_run["params"], session_workspace, log) as url:
        yield Running(url, log)


# One model per family besides the image one, each trained on a slice of its shipped data.
FAST_NETWORK = {"max_epochs": 4, "batch_size": 64, "learning_rate": 0.01}
FAMILY_PIPELINES = {
    "cancer": {
        "pipeline": {"family": "tabular"},
        "load": {"source": "breast_cancer"},
        "train": {"model": {"name": "logistic_regression"}},
    },
    "news": {
        "pipeline": {"family": "text"},
        "load": {"source": "bbc_news", "max_rows": 400, "max_text_chars": 30000},
        "train": {"model": {"name": "tfidf_linear", "hash_bits": 14}},
    },
    "movies": {
        "pipeline": {"family": "recommendation"},
        "load": {"source": "movielens_100k", "max_rows": 5000},
        "train": {**FAST_NETWORK, "model": {"name": "matrix_factorization", "factors": 8}},
    },
}


@pytest.fixture(scope="session")
def family_servers(
    digits_server: Running,
    project_settings: Settings,
    session_workspace: Workspace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """A server per family (digits, cancer, news, movies), shared by the end-to-end modules;
    each family's server starts while the next family trains."""
    from mlaas.stages.table import STAGES, run_stage

    folder = tmp_path_factory.mktemp("families")
    with started_side_by_side() as start:
        starting = {}
        for name, sections in FAMILY_PIPELINES.items():
            settings = shrink(project_settings, name, validate={"min_rows": 100}, **sections)
            for stage in STAGES:
                run_stage(stage, settings, session_workspace)
            params = write_params(settings, folder)
            starting[name] = start(params, session_workspace, folder / f"{name}.log")
        yield {"digits": digits_server.url} | {
            name: server.result().url for name, server in starting.items()
        }


MLAAS_CLI = str(Path(sys.executable).parent / "mlaas")


def mlaas_cli(
    environment: dict[str, str], home: Path, *args: str, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    """`mlaas --home HOME ARGS...` in the project folder, as a user types it."""
    return subprocess.run(
        [MLAAS_CLI, "--home", str(home), *args],
        env=environment,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def recorded_pids(home: Path) -> set[int]:
    """The PIDs of the parts `mlaas up` recorded in `home`."""
    return {int(json.loads(p.read_text())["pid"]) for p in (home / "run").glob("*.json")}


def groups_alive(pids: set[int]) -> list[Any]:
    """The processes still running in the process groups `pids` lead."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in pids and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


__all__ = [
    "Running",
    "free_port",
    "groups_alive",
    "mlaas_cli",
    "recorded_pids",
    "served",
    "shrink",
    "started_side_by_side",
    "write_params",
]
