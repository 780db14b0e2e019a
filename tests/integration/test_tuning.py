"""Hyperparameter search (`tune:`): trials as Prefect tasks on a real Dask cluster, nested MLflow
runs, pruning, and the winner trained, registered and promoted like any model.

Each search is `mlaas run` in a process of its own (Dask's local cluster starts worker
processes, which must not be forked from pytest), reporting to the session's Prefect server,
which the test then reads."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from tests.conftest import PROJECT_ROOT, shrink, write_params

from mlaas.core.records import SearchResult, TrainingResult
from mlaas.core.settings import Settings
from mlaas.modeling.models import load_model
from mlaas.modeling.tuning import PARENT_RUN_TAG, TRIAL_PROCESS_TAG, TRIAL_STATE_TAG
from mlaas.serving.processes import free_port
from mlaas.stores.files import read_json
from mlaas.stores.studies import study_storage
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
MLAAS = str(Path(sys.executable).parent / "mlaas")
DASK = str(Path(sys.executable).parent / "dask")
NO_DASHBOARD = ("--host", "127.0.0.1", "--dashboard-address", ":0")


def _environment(home: Path, api_url: str) -> dict[str, str]:
    """The flow's: its own workspace, the session's Prefect server."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    return {**inherited, **Workspace(home).environment(), "PREFECT_API_URL": api_url}


@pytest.fixture
def api_url(prefect_server: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the session's Prefect server has no URL"
    return str(url)


def _run(settings: Settings, home: Path, api_url: str, folder: Path) -> str:
    params = write_params(settings, folder)
    done = subprocess.run(
        [MLAAS, "--home", str(home), "run", "--params", str(params)],
        cwd=PROJECT_ROOT,
        env=_environment(home, api_url),
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return output


def _search(home: Path, name: str) -> SearchResult:
    return SearchResult.model_validate(read_json(Workspace(home).pipeline(name).search_record, "t"))


def _trial_runs(home: Path, parent_run_id: str) -> list[Run]:
    client = MlflowClient(Workspace(home).tracking_uri)
    runs = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
    )
    return sorted(runs, key=lambda run: int(run.data.tags["mlaas.trial"]))


def _trial_task_runs(pipeline: str) -> list[Any]:
    """The `trial-N` task runs of the `hyperparameter_search` subflow that searched `pipeline`."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        searches = [
            run
            for run in client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["hyperparameter_search"]))
            )
            if run.parameters["requests"][0]["params"]["pipeline"]["name"] == pipeline
        ]
        assert len(searches) == 1, f"{len(searches)} searches of {pipeline}"
        assert searches[0].parent_task_run_id is not None  # started by the `tune` task
        return list(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[searches[0].id]))
            )
        )


def _overlap(runs: list[Run]) -> bool:
    """Two of the runs were running at the same time."""
    spans = sorted((run.info.start_time, run.info.end_time) for run in runs)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_six_trials_on_breast_cancer_run_two_at_once_on_dask_and_the_best_is_registered(
    project_settings: Settings, api_url: str, tmp_path: Path
) -> None:
    settings = shrink(
        project_settings,
        "tuned-cancer",
        pipeline={"family": "tabular"},
        load={"source": "breast_cancer"},
        train={"model": {"name": "svm"}},
        tune={"trials": 6, "parallel": 2},
    )
    home = tmp_path / "home"
    output = _run(settings, home, api_url, tmp_path)
    search = _search(home, "tuned-cancer")
    assert f"search {search.study}: best trial {search.best_trial}" in output
    assert (search.trials, search.count("complete"), search.metric) == (6, 6, "val_accuracy")

    # Each trial a task run of the search's subflow, Completed.
    task_runs = _trial_task_runs("tuned-cancer")
    assert sorted(run.name for run in task_runs) == [f"trial-{n}" for n in range(6)]
    assert {run.state_name for run in task_runs} == {"Completed"}

    # ... and a nested MLflow run under the training run, with its settings and metric.
    trials = _trial_runs(home, str(search.run_id))
    assert [run.data.tags[TRIAL_STATE_TAG] for run in trials] == ["complete"] * 6
    assert all(run.info.status == "FINISHED" for run in trials)
    assert all({"c", "kernel"} <= set(run.data.params) for run in trials)
    values = [run.data.metrics["val_accuracy"] for run in trials]
    assert max(values) == search.best_value
    # Two worker processes, really at once.
    assert len({run.data.tags[TRIAL_PROCESS_TAG] for run in trials}) == 2
    assert _overlap(trials)

    # The winner's settings are what was trained, into the parent run, and registered.
    training = TrainingResult.model_validate(
        read_json(Workspace(home).pipeline("tuned-cancer").training_result, "t")
    )
    assert training.run_id == search.run_id
    model = load_model(training.model_dir)
    assert model.card.model.model_dump()["c"] == search.best_values["c"]
    assert model.card.model.model_dump()["kernel"] == search.best_values["kernel"]
    client = MlflowClient(Workspace(home).tracking_uri)
    (version,) = client.search_model_versions("name='tuned-cancer'")
    assert version.run_id == search.run_id
    assert client.get_model_version_by_alias("tuned-cancer", "champion").version == version.version
    manifest = json.loads((Workspace(home).pipeline("tuned-cancer").manifest).read_text())
    assert manifest["search"]["complete"] == 6
    assert manifest["search"]["best_values"] == search.best_values

    # The same search again (same data, settings, code): the tune task's cache, no new trials.
    _run(settings, home, api_url, tmp_path)
    assert len(_trial_runs(home, str(search.run_id))) == 6


def _wait_for_the_experiment(home: Path, pipeline: str, deadline: float) -> None:
    """Wait, reading the SQLite file only, until the run has made the store and `pipeline`'s
    experiment: a client opened on a new store creates its tables itself, and MLflow's schema
    set-up racing the run's (which holds the store's lock) fails one of them (ci11: "table
    sql_trace_metric_daily_rollups already exists")."""
    database = Workspace(home).tracking_db
    assert database is not None
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):  # no file or no table yet
            connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
            try:
                query = "SELECT 1 FROM experiments WHERE name = ?"
                if connection.execute(query, (pipeline,)).fetchone():
                    return
            finally:
                connection.close()
        time.sleep(0.1)
    raise AssertionError(f"the run never made the experiment {pipeline!r} in {database}")


def _kill_the_training_of_trial(home: Path, pipeline: str, number: int, deadline: float) -> None:
    """SIGKILL the training process of trial `number` as soon as it is seen."""
    _wait_for_the_experiment(home, pipeline, deadline)
    client = MlflowClient(Workspace(home).tracking_uri)
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # no run yet
            experiment = client.get_experiment_by_name(pipeline)
            assert experiment is not None
            (run,) = client.search_runs(
                [experiment.experiment_id], filter_string=f"tags.`mlaas.trial` = '{number}'"
            )
            for process in psutil.process_iter(["cmdline"]):
                cmdline = process.info["cmdline"] or []
                if "mlaas.modeling.train_worker" in cmdline:
                    request = json.loads(Path(cmdline[-2]).read_text())
                    if request["run_id"] == run.info.run_id:
                        process.send_signal(signal.SIGKILL)
                        return
        time.sleep(0.1)
    raise AssertionError(f"trial {number}'s training was never seen")


def test_a_digits_search_prunes_hopeless_trials_and_survives_a_crashed_one(
    project_settings: Settings, api_url: str, tmp_path: Path
) -> None:
    # Random draws seeded by pipeline.seed + the trial's place: 45..49 draw the learning rates
    # 0.01, 0.01, 1e-6, 1e-6, 0.01. The two hopeless ones start when a finished trial gives the
    # median pruner something to compare with; the fifth is killed mid-training.
    settings = shrink(
        project_settings,
        "tuned-digits",
        pipeline={"seed": 45},
        train={"max_epochs": 4, "model": {"name": "cnn", "conv_channels": [8], "hidden_units": 32}},
        tune={
            "trials": 5,
            "parallel": 2,
            "sampler": "random",
            "pruning_startup_trials": 1,
            "search_space": {"learning_rate": {"choices": [0.01, 1e-6]}},
        },
    )
    home = tmp_path / "home"
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        killer = pool.submit(
            _kill_the_training_of_trial, home, "tuned-digits", 4, time.monotonic() + 600
        )
        _run(settings, home, api_url, tmp_path)
        killer.result()
    search = _search(home, "tuned-digits")
    states = {o.number: o.state for o in search.outcomes}
    assert states == {0: "complete", 1: "complete", 2: "pruned", 3: "pruned", 4: "failed"}
    assert search.best_values == {"learning_rate": 0.01}
    assert "killed by signal 9" in str(next(o.error for o in search.outcomes if o.number == 4))

    trials = _trial_runs(home, str(search.run_id))
    for run in trials:
        number = int(run.data.tags["mlaas.trial"])
        # Pruned: tagged and ended FINISHED, not left FAILED; each has its learning curve.
        assert run.data.tags[TRIAL_STATE_TAG] == states[number]
        assert run.info.status == ("FAILED" if states[number] == "failed" else "FINISHED")
        if states[number] == "pruned":
            assert run.data.tags["pruned"] == "true"
        history = MlflowClient(Workspace(home).tracking_uri).get_metric_history(
            run.info.run_id, "val_accuracy"
        )
        if states[number] != "failed":  # killed before its first epoch
            assert history and history[0].step == 0
    # The study itself agrees, in the journal under the pipeline's folder.
    import optuna

    study = optuna.load_study(
        study_name=search.study,
        storage=study_storage(Workspace(home), Workspace(home).pipeline("tuned-digits").tune_dir),
    )
    assert [t.state.name for t in study.trials] == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "PRUNED",
        "FAIL",
    ]
    assert len(_trial_task_runs("tuned-digits")) == 5
    client = MlflowClient(Workspace(home).tracking_uri)
    (version,) = client.search_model_versions("name='tuned-digits'")
    assert version.run_id == search.run_id


@contextlib.contextmanager
def _dask_cluster(environment: dict[str, str], log: Path) -> Iterator[tuple[str, list[int]]]:
    """`dask scheduler` and two `dask worker` processes on loopback; their address and PIDs."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    with log.open("wb") as sink:
        try:
            processes.append(
                subprocess.Popen(
                    [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), *NO_DASHBOARD],
                    env=environment,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            for _ in range(2):
                processes.append(
                    subprocess.Popen(
                        [DASK, "worker", address, "--nthreads", "1", "--no-nanny", *NO_DASHBOARD],
                        env=environment,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            from distributed import Client

            with Client(address, timeout=120) as client:
                client.wait_for_workers(2, timeout=120)
            yield address, [process.pid for process in processes[1:]]
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def test_trials_run_on_a_dask_scheduler_and_two_workers_started_on_loopback(
    project_settings: Settings, api_url: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    environment = _environment(home, api_url)
    with _dask_cluster(environment, tmp_path / "dask.log") as (address, worker_pids):
        settings = shrink(
            project_settings,
            "tuned-on-dask",
            pipeline={"family": "tabular"},
            load={"source": "wine"},
            train={"model": {"name": "logistic_regression"}},
            tune={"trials": 4, "parallel": 2, "dask_address": address},
        )
        _run(settings, home, api_url, tmp_path)
    search = _search(home, "tuned-on-dask")
    assert search.count("complete") == 4
    trials = _trial_runs(home, str(search.run_id))
    ran_in = {int(run.data.tags[TRIAL_PROCESS_TAG].rsplit(":", 1)[1]) for run in trials}
    assert ran_in <= set(worker_pids) and len(ran_in) == 2, (ran_in, worker_pids)
    assert sorted(run.name for run in _trial_task_runs("tuned-on-dask")) == [
        f"trial-{n}" for n in range(4)
    ]
