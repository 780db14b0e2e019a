"""`mlaas up | status | down` and training as a service: real processes on loopback.

One platform for the module (Prefect, MLflow, the deployments' runner, the control API, model
servers), with an API key, started once because it takes a minute: every part answers and
`status` says so; a scheduled run fires on its own and completes (the Prefect 3.8.8 + SQLAlchemy
2.1 trap); a table is uploaded, a pipeline created from it, a run started and followed to its end,
its champion served; a worse run stays challenger while the server keeps the champion; a
promotion and a rollback by hand are followed by the server without a restart. Every control
endpoint refuses bad input with a 4xx that names the problem and writes nothing; schemathesis
fuzzes the API's schema, bounded. `up` twice starts no second copy and restarts a part that
died; `mlaas down` leaves no process of ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from tests.conftest import PROJECT_ROOT, groups_alive, mlaas_cli, recorded_pids

from mlaas.control.prefect_api import PrefectApi
from mlaas.core.settings import Settings
from mlaas.orchestration.heartbeats import CRASH_SILENT_RUNS
from mlaas.serving.processes import free_port
from mlaas.stores.registry import Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
API_KEY = "control-test-key-0123456789abcdef"
PIPELINE = "wine-api"
SCHEDULED = "wine-base"
PARTS = ("prefect", "mlflow", "deployments", "api")
SCHEDULED_EVERY_SECONDS = 10
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# A run queues for the runner (it looks every 10 s) and trains a logistic regression in seconds;
# a model server loads torch and the model in a fresh interpreter. Generous for a busy machine.
RUN_ENDS_WITHIN_SECONDS = 240
SERVER_STARTS_WITHIN_SECONDS = 240
# The servers look for a new champion every serve.champion_poll_seconds (5 s by default) and
# load it in a second or two.
SWAPPED_WITHIN_SECONDS = 60
FUZZ_EXAMPLES = int(os.environ.get("MLAAS_FUZZ_EXAMPLES", "10"))


@dataclass(frozen=True)
class Running:
    home: Path
    api: str
    prefect: str
    mlflow: str
    environment: dict[str, str]
    headers: dict[str, str]
    up: tuple[str, ...]
    """The `mlaas up` arguments it was started with."""

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.api}{path}", headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def platform(
    project_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("control")
    home = folder / "home"
    base = project_settings.as_params()
    base["pipeline"].update(name=SCHEDULED, family="tabular")
    base["load"].update(source="wine")
    base["validate"].update(min_rows=100)
    base["train"].update(model={"name": "logistic_regression"})
    base["serve"].update(port=free_port())
    base["deploy"].update(interval_seconds=SCHEDULED_EVERY_SECONDS)
    params = folder / f"{SCHEDULED}.yaml"
    params.write_text(yaml.safe_dump(base, sort_keys=False))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    environment["MLAAS_API_KEY"] = API_KEY
    prefect_port, mlflow_port, api_port = free_port(), free_port(), free_port()
    up = (
        "up",
        *("--params", str(params)),
        *("--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)),
        *("--api-port", str(api_port), "--max-upload-bytes", "200000"),
    )
    started = mlaas_cli(environment, home, *up)
    pids: set[int] = set()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Running(
            home=home,
            api=f"http://127.0.0.1:{api_port}",
            prefect=f"http://127.0.0.1:{prefect_port}",
            mlflow=f"http://127.0.0.1:{mlflow_port}",
            environment=environment,
            headers={"Authorization": f"Bearer {API_KEY}"},
            up=up,
        )
        pids = recorded_pids(home)
    finally:
        pids |= recorded_pids(home)
        stopped = mlaas_cli(environment, home, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not groups_alive(pids), "a process of ours outlived `mlaas down`"
    assert _states(mlaas_cli(environment, home, "status").stdout) == dict.fromkeys(PARTS, "down")
    assert not list((home / "run").glob("*.json"))


def _states(status_output: str) -> dict[str, str]:
    """The first table of `mlaas status`: part -> state (the pipelines' table follows it)."""
    parts_table = status_output.split("\n\n")[0]
    rows = [line.split() for line in parts_table.splitlines()[1:] if line.strip()]
    return {row[0]: row[1] for row in rows}


def _prefect(platform: Running) -> PrefectApi:
    """The platform's Prefect server, reached as the control API reaches it: SQLite makes it
    answer 503 for a moment now and then, and a raw request would fail the test on that."""
    return PrefectApi(f"{platform.prefect}/api")


def _recorded_pid(home: Path, part: str) -> int:
    return int(json.loads((home / "run" / f"{part}.json").read_text())["pid"])


def test_every_part_answers_and_a_scheduled_run_completes(platform: Running) -> None:
    assert httpx.get(f"{platform.prefect}/api/health", timeout=5).json() is True
    assert httpx.get(f"{platform.mlflow}/health", timeout=5).status_code == 200
    assert httpx.get(f"{platform.api}/healthz", timeout=5).status_code == 200
    status = _states(mlaas_cli(platform.environment, platform.home, "status").stdout)
    assert {part: status[part] for part in PARTS} == dict.fromkeys(PARTS, "up")

    # The deployment, as the Prefect API (and so its UI) shows it.
    prefect = _prefect(platform)
    deployment = prefect.deployment(SCHEDULED)
    assert deployment["schedules"][0]["schedule"]["interval"] == SCHEDULED_EVERY_SECONDS
    assert deployment["parameters"]["home"] == str(platform.home)
    assert deployment["global_concurrency_limit"]["limit"] == 1
    # A run whose process vanishes is marked Crashed once its heartbeats stop (not Running for
    # ever, holding that one slot): the automation `up` made, on the server.
    automations = prefect.call("POST", "/automations/filter", {})
    [crash_silent] = [a for a in automations if a["name"] == CRASH_SILENT_RUNS]
    assert crash_silent["enabled"] and crash_silent["actions"][0]["state"] == "CRASHED"

    # A run nobody asked for: the schedule's, completed, with the pipeline's champion.
    deadline = time.monotonic() + RUN_ENDS_WITHIN_SECONDS
    filters = {
        "deployments": {"id": {"any_": [deployment["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
    }
    while not (runs := prefect.call("POST", "/flow_runs/filter", filters)):
        assert time.monotonic() < deadline, f"no scheduled run in {RUN_ENDS_WITHIN_SECONDS} s"
        time.sleep(2)
    assert runs[0]["auto_scheduled"] is True
    assert (platform.home / "pipelines" / SCHEDULED / "package" / "package.json").is_file()
    # Prefect 3.8.8 with SQLAlchemy 2.1 logged "Can't evaluate bulk DML statement" here and
    # never created a scheduled run.
    server_log = (platform.home / "logs" / "prefect.log").read_text()
    assert "ERROR" not in server_log and "bulk DML" not in server_log
    # Enough of the schedule: the rest of the module is quieter without a run every 10 s.
    prefect.call("POST", f"/deployments/{deployment['id']}/pause_deployment")
    assert prefect.call("GET", f"/deployments/{deployment['id']}")["paused"] is True

    # `mlaas run` on the same workspace runs on this server (no temporary one of its own) and
    # shows in its UI; the data, settings and code are the scheduled run's, so nothing retrains.
    params = platform.up[platform.up.index("--params") + 1]
    by_hand = mlaas_cli(platform.environment, platform.home, "run", "--params", params)
    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
    assert "temporary server" not in by_hand.stdout + by_hand.stderr
    assert "nothing changed" in by_hand.stdout + by_hand.stderr
    direct = {"flow_runs": {"deployment_id": {"is_null_": True}}}
    [flow_run] = prefect.call("POST", "/flow_runs/filter", direct)
    assert flow_run["state_type"] == "COMPLETED"


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_wine

    path = tmp_path_factory.mktemp("upload") / "wine.csv"
    load_wine(as_frame=True).frame.to_csv(path, index=False)
    return path


def _wait_for_run(platform: Running, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_ENDS_WITHIN_SECONDS
    while time.monotonic() < deadline:
        run: dict[str, Any] = platform.call("GET", f"/runs/{run_id}").json()
        if run["state"] in FINAL:
            return run
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not end in {RUN_ENDS_WITHIN_SECONDS} s: {run}")


def _wait_for_server(platform: Running, pipeline: str) -> str:
    deadline = time.monotonic() + SERVER_STARTS_WITHIN_SECONDS
    while time.monotonic() < deadline:
        server = platform.call("GET", f"/pipelines/{pipeline}").json()["server"]
        if server["state"] == "up":
            return str(server["url"])
        time.sleep(2)
    log = (platform.home / "logs" / "api.log").read_text()[-3000:]
    raise AssertionError(
        f"no model server for {pipeline} in {SERVER_STARTS_WITHIN_SECONDS} s\n{log}"
    )


def _served_version(platform: Running, url: str, instance: dict[str, Any]) -> tuple[int, int]:
    """The version /model names and the one a /predict answer names."""
    described = httpx.get(f"{url}/model", headers=platform.headers, timeout=30).json()
    answer = httpx.post(
        f"{url}/predict", json={"instances": [instance]}, headers=platform.headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return int(described["version"]), int(answer.json()["model"]["version"])


def _wait_for_version(platform: Running, url: str, instance: dict[str, Any], version: int) -> None:
    deadline = time.monotonic() + SWAPPED_WITHIN_SECONDS
    while time.monotonic() < deadline:
        if _served_version(platform, url, instance) == (version, version):
            return
        time.sleep(1)
    raise AssertionError(f"the server at {url} did not swap in v{version}")


def test_training_as_a_service_end_to_end(platform: Running, wine_csv: Path) -> None:
    # Upload: multipart, then the same bytes as a raw body, which is the same data set.
    with wine_csv.open("rb") as file:
        uploaded = platform.call("POST", "/datasets", files={"file": ("wine.csv", file)})
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["rows"] == 178 and dataset["format"] == "csv"
    assert {"name": "target", "type": "integer"} in dataset["columns"]
    again = platform.call(
        "POST",
        "/datasets?filename=again.csv",
        content=wine_csv.read_bytes(),
        headers={"Content-Type": "text/csv"},
    )
    assert again.status_code == 201 and again.json()["id"] == dataset["id"]

    document = {
        "pipeline": {"name": PIPELINE, "family": "tabular"},
        "load": {"dataset": dataset["id"], "target": "target"},
        "validate": {"min_rows": 100},
        "train": {"model": {"name": "logistic_regression"}},
    }
    created = platform.call("POST", "/pipelines", json=document)
    assert created.status_code == 201, created.text
    assert created.json()["champion"] is None and created.json()["params"] == document
    assert platform.call("POST", "/pipelines", json=document).status_code == 409

    # A run through the API: a run of the Prefect deployment, with its reason, to the end.
    started = _start_run(platform, {"reason": "first model"})
    run = _wait_for_run(platform, started["id"])
    assert run["state"] == "COMPLETED", run
    outcome = run["outcome"]
    assert outcome["version"]["version"] == 1 and outcome["decision"]["promoted"] is True
    assert run["links"]["mlflow"].endswith(f"/models/{PIPELINE}/versions/1")
    prefect = _prefect(platform)
    in_prefect = prefect.flow_run(started["id"])
    assert in_prefect["parameters"]["reason"] == "first model"
    assert prefect.deployment_name(in_prefect["deployment_id"]) == PIPELINE

    # Its champion, served by a model server the platform started.
    url = _wait_for_server(platform, PIPELINE)
    instance = _first_wine(wine_csv)
    assert _served_version(platform, url, instance) == (1, 1)

    # A worse model (almost no regularisation budget), from the shell this time (`mlaas train
    # --set --wait`, `mlaas runs`, `mlaas pipelines` call the same API): it stays challenger,
    # v1 keeps serving.
    trained = mlaas_cli(
        platform.environment,
        platform.home,
        *("train", PIPELINE, "--set", "train.model.c=0.00001", "--reason", "a worse one"),
        "--wait",
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    cli_run = re.search(r"run ([0-9a-f-]{36}) of", trained.stdout)
    assert cli_run, trained.stdout
    shown = mlaas_cli(platform.environment, platform.home, "runs", cli_run.group(1))
    assert json.loads(shown.stdout)["state"] == "COMPLETED"
    run = platform.call("GET", f"/runs/{cli_run.group(1)}").json()
    assert run["state"] == "COMPLETED", run
    assert run["overrides"] == {"train": {"model": {"c": 1e-5}}}
    decision = run["outcome"]["decision"]
    assert decision["promoted"] is False and decision["alias"] == "challenger"
    assert decision["champion_version"] == 1 and decision["champion_value"] is not None
    view = platform.call("GET", f"/pipelines/{PIPELINE}").json()
    assert view["champion"]["version"] == 1 and view["challenger"]["version"] == 2
    assert [r["state"] for r in view["last_runs"]] == ["COMPLETED", "COMPLETED"]
    assert _served_version(platform, url, instance) == (1, 1)
    listed = json.loads(mlaas_cli(platform.environment, platform.home, "pipelines").stdout)
    assert {view["name"] for view in listed} == {SCHEDULED, PIPELINE}

    # By hand: v2 promoted (who and why recorded), then rolled back; the server follows both.
    missing = platform.call("POST", f"/pipelines/{PIPELINE}/promote", json={"version": 99})
    assert missing.status_code == 404 and "version" in missing.json()["error"]
    promoted = platform.call(
        "POST",
        f"/pipelines/{PIPELINE}/promote",
        json={"version": 2, "reason": "check the swap", "by": "tester"},
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["from_version"] == 1 and promoted.json()["to_version"] == 2
    tags = Registry(Workspace(platform.home)).version_tags(PIPELINE, 2)
    assert tags["mlaas.promoted_by"] == "tester"
    assert tags["mlaas.promoted_reason"] == "check the swap"
    _wait_for_version(platform, url, instance, 2)
    rolled = platform.call("POST", f"/pipelines/{PIPELINE}/rollback", json={"reason": "worse"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["to_version"] == 1
    _wait_for_version(platform, url, instance, 1)

    status = mlaas_cli(platform.environment, platform.home, "status").stdout
    assert re.search(rf"^{PIPELINE}\s+v1 test_accuracy=", status, re.MULTILINE), status
    assert re.search(rf"^serve-{PIPELINE}\s+up", status, re.MULTILINE), status


def _start_run(platform: Running, body: dict[str, Any], pipeline: str = PIPELINE) -> dict[str, Any]:
    answer = platform.call("POST", f"/pipelines/{pipeline}/runs", json=body)
    assert answer.status_code == 202, answer.text
    started: dict[str, Any] = answer.json()
    assert started["state"] == "SCHEDULED" and started["links"]["prefect"].endswith(started["id"])
    return started


LOOP = "loop-api"
LOOP_ROWS = 400


def _loop_rows(count: int, shifted: bool, seed: int) -> list[dict[str, Any]]:
    """Rows of x1, x2 and their true label. As trained: both standard normal, `yes` when
    x1 + x2 > 0. Shifted, as production later sends them: x2 moves 3 sigma up, where only x1
    decides, so the champion is wrong on about half of them until it learns from feedback."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, count), rng.normal(3 if shifted else 0, 1, count)
    yes = x1 > 0 if shifted else x1 + x2 > 0
    return [
        {"x1": float(a), "x2": float(b), "label": "yes" if y else "no"}
        for a, b, y in zip(x1, x2, yes, strict=True)
    ]


def _play(platform: Running, url: str, rows: list[dict[str, Any]]) -> float:
    """Each row to /predict, then its true label to /feedback; the champion's accuracy."""
    right = 0
    with httpx.Client(base_url=url, headers=platform.headers, timeout=30) as client:
        for row in rows:
            instance = {"x1": row["x1"], "x2": row["x2"]}
            answer = client.post("/predict", json={"instances": [instance]})
            assert answer.status_code == 200, answer.text
            right += answer.json()["predictions"][0]["label"] == row["label"]
            told = client.post(
                "/feedback", json={"request_id": answer.json()["request_id"], "label": row["label"]}
            )
            assert told.status_code == 202, told.text
    return right / len(rows)


def _monitor_now(platform: Running, pipeline: str) -> dict[str, Any]:
    """A run of the pipeline's `monitor` deployment, as its schedule starts one, to its end;
    then the check as `GET /pipelines/{name}` shows it."""
    prefect = _prefect(platform)
    created = prefect.start_run(prefect.deployment(pipeline, "monitor")["id"], {}, [])
    deadline = time.monotonic() + RUN_ENDS_WITHIN_SECONDS
    while time.monotonic() < deadline:
        run = prefect.flow_run(created["id"])
        if run["state_type"] in FINAL:
            assert run["state_type"] == "COMPLETED", run
            monitoring: dict[str, Any] = platform.call("GET", f"/pipelines/{pipeline}").json()[
                "monitoring"
            ]
            return monitoring
        time.sleep(2)
    raise AssertionError(f"the monitor run of {pipeline} did not end")


def test_the_loop_closes_drift_then_retraining_then_a_better_champion_served(
    platform: Running, tmp_path: Path
) -> None:
    import pandas as pd

    data = tmp_path / "loop.csv"
    pd.DataFrame(_loop_rows(LOOP_ROWS, shifted=False, seed=0)).to_csv(data, index=False)
    uploaded = platform.call(
        "POST",
        f"/datasets?filename={data.name}",
        content=data.read_bytes(),
        headers={"Content-Type": "text/csv"},
    )
    assert uploaded.status_code == 201, uploaded.text
    document = {
        "pipeline": {"name": LOOP, "family": "tabular"},
        "load": {"dataset": uploaded.json()["id"], "target": "label"},
        "validate": {"min_rows": 100},
        "train": {"model": {"name": "gradient_boosting"}},
        # Live accuracy must fall 10 points below the test figure (40 test rows: 1.0 or 0.975).
        "monitor": {"window_records": 100, "retrain_cooldown_seconds": 0, "quality_tolerance": 0.1},
    }
    assert platform.call("POST", "/pipelines", json=document).status_code == 201
    first = _wait_for_run(platform, _start_run(platform, {}, LOOP)["id"])
    assert first["state"] == "COMPLETED", first
    url = _wait_for_server(platform, LOOP)

    # Production as trained: no drift, quality holds, nothing retrains.
    assert _play(platform, url, _loop_rows(150, shifted=False, seed=1)) > 0.85
    calm = _monitor_now(platform, LOOP)
    # (A check the schedule starts meanwhile would take a share of the window.)
    assert calm["model_version"] == 1 and calm["window_records"] >= 100
    assert calm["drifted"] is False and calm["quality_fell"] is False, calm
    assert calm["retraining"] == "not_wanted" and calm["live_feedback"] == 150

    # Production moves: x2 drifts, the champion is wrong on half, people say so.
    assert _play(platform, url, _loop_rows(300, shifted=True, seed=2)) < 0.75
    alarm = _monitor_now(platform, LOOP)
    assert 100 <= alarm["window_records"] <= 300  # only what came since the last check
    assert alarm["drifted"] is True and "x2" in alarm["drifted_features"], alarm
    assert alarm["quality_fell"] is True and alarm["retraining"] == "started", alarm
    assert Path(alarm["report"]).is_file()

    # The retraining: a run of the deployment, on the data plus the 450 labelled answers,
    # decided against the champion on the same (new) test split, and promoted.
    retrained = _wait_for_run(platform, alarm["retraining_run"])
    assert retrained["state"] == "COMPLETED", retrained
    assert retrained["reason"].startswith("monitor: the data drifted")
    extra_rows = Path(retrained["overrides"]["load"]["extra_rows"])
    assert pd.read_parquet(extra_rows).shape[0] == 450
    decision = retrained["outcome"]["decision"]
    assert decision["promoted"] is True, decision
    assert decision["compared_on"] == "the candidate's test split", decision
    assert decision["champion_value"] < decision["candidate_value"]
    # The server answers with the new champion, without a restart.
    shifted = _loop_rows(1, shifted=True, seed=3)[0]
    _wait_for_version(platform, url, {"x1": shifted["x1"], "x2": shifted["x2"]}, 2)

    # Where people look: the check's MLflow run and its Prefect artifact.
    experiment = httpx.get(
        f"{platform.mlflow}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "monitoring"},
        headers=platform.headers,
        timeout=10,
    )
    assert experiment.status_code == 200, experiment.text
    artifacts = httpx.post(
        f"{platform.prefect}/api/artifacts/filter",
        json={"artifacts": {"key": {"any_": [f"monitor-{LOOP}"]}}},
        timeout=10,
    ).json()
    assert any("Drifted: yes" in artifact["data"] for artifact in artifacts), artifacts
    status = mlaas_cli(platform.environment, platform.home, "status").stdout
    assert re.search(rf"^{LOOP}\s+v2 .*DRIFT", status, re.MULTILINE), status


def _first_wine(wine_csv: Path) -> dict[str, Any]:
    import pandas as pd

    row: dict[str, Any] = pd.read_csv(wine_csv).drop(columns=["target"]).iloc[0].to_dict()
    return row


def _written(home: Path) -> dict[str, bytes]:
    """Every file the control API writes to (data sets, catalog)."""
    return {
        str(path): path.read_bytes()
        for folder in (home / "datasets", home / "catalog")
        for path in folder.rglob("*")
        if path.is_file()
    }


BAD_INPUT = [
    # (method, path, request arguments, status, what the error must name)
    ("POST", "/pipelines", {"json": [1, 2]}, 422, "body"),
    ("POST", "/pipelines", {"json": {"load": {"source": "wine"}}}, 422, "pipeline.name"),
    ("POST", "/pipelines", {"json": {"pipeline": {"name": "wine-base"}}}, 409, "pipeline.name"),
    (
        "POST",
        "/pipelines",
        {"json": {"pipeline": {"name": "p1", "family": "tabular"}, "trian": {}}},
        422,
        "trian",
    ),
    (
        "POST",
        "/pipelines",
        {"json": {"pipeline": {"name": "p2", "family": "tabular"}, "load": {"path": "/etc"}}},
        422,
        "load.path",
    ),
    (
        "POST",
        "/pipelines",
        {"json": {"pipeline": {"name": "p3"}, "package": {"bentofile": "../x.yaml"}}},
        422,
        "package",
    ),
    (
        "POST",
        "/pipelines",
        {"json": {"pipeline": {"name": "p4", "family": "tabular"}, "load": {"dataset": "../x"}}},
        422,
        "load.dataset",
    ),
    (
        "POST",
        "/pipelines",
        {
            "json": {
                "pipeline": {"name": "p5", "family": "tabular"},
                "load": {"source": "wine"},
                "train": {"max_epochs": "many"},
            }
        },
        422,
        "train.max_epochs",
    ),
    ("POST", "/pipelines", {"json": {"pipeline": {"name": "../../etc"}}}, 422, "pipeline name"),
    ("GET", "/pipelines/nope", {}, 404, "nope"),
    ("GET", "/pipelines/BAD..NAME", {}, 422, "name"),
    ("POST", "/pipelines/nope/runs", {"json": {}}, 404, "nope"),
    ("POST", "/pipelines/wine-base/runs", {"json": {"bogus": 1}}, 422, "bogus"),
    ("POST", "/pipelines/wine-base/runs", {"json": {"overrides": []}}, 422, "overrides"),
    (
        "POST",
        "/pipelines/wine-base/runs",
        {"json": {"overrides": {"train": {"max_epochs": -1}}}},
        422,
        "train.max_epochs",
    ),
    (
        "POST",
        "/pipelines/wine-base/runs",
        {"json": {"overrides": {"load": {"path": "/etc/passwd"}}}},
        422,
        "overrides.load.path",
    ),
    (
        "POST",
        "/pipelines/wine-base/runs",
        {"json": {"overrides": {"serve": {"port": 1}}}},
        422,
        "overrides.serve",
    ),
    ("GET", "/runs/not-a-run", {}, 422, "run_id"),
    ("GET", "/runs/00000000-0000-0000-0000-000000000000", {}, 404, "run_id"),
    ("POST", "/pipelines/wine-base/promote", {"json": {"version": "1"}}, 422, "version"),
    ("POST", "/pipelines/wine-base/promote", {"json": {"version": 0}}, 422, "version"),
    ("POST", "/pipelines/nope/promote", {"json": {"version": 1}}, 404, "nope"),
    ("POST", "/pipelines/nope/rollback", {"json": {}}, 404, "nope"),
    ("GET", "/datasets/0123456789abcdef", {}, 404, "data set"),
    (
        "POST",
        "/datasets?filename=../../evil.csv",
        {"content": b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "headers": {"Content-Type": "image/png"}},
        422,
        "table",
    ),
    (
        "POST",
        "/datasets",
        {"content": b"a,b\n", "headers": {"Content-Type": "text/csv"}},
        422,
        "0 rows",
    ),
    (
        "POST",
        "/datasets",
        {"content": b"", "headers": {"Content-Type": "text/csv"}},
        422,
        "empty",
    ),
    (
        "POST",
        "/datasets",
        {"content": b"x,y\n" + b"1,2\n" * 60_000, "headers": {"Content-Type": "text/csv"}},
        413,
        "limit",
    ),
    (
        "POST",
        "/datasets",
        {"files": {"upload": ("a.csv", b"a\n1\n")}},
        422,
        "file",
    ),
]


def test_bad_input_to_every_control_endpoint_is_a_4xx_that_names_it(platform: Running) -> None:
    before = _written(platform.home)
    for method, path, arguments, status, named in BAD_INPUT:
        answer = platform.call(method, path, **arguments)
        assert answer.status_code == status, (method, path, answer.status_code, answer.text)
        assert named in answer.json()["error"], (method, path, answer.text)
    assert _written(platform.home) == before, "a refused request wrote something"
    assert not list(platform.home.rglob("evil.csv"))


def test_the_api_key_is_required_but_for_health(platform: Running) -> None:
    open_health = httpx.get(f"{platform.api}/healthz", timeout=10)
    assert open_health.status_code == 200
    for method, path in [
        ("GET", "/pipelines"),
        ("POST", "/datasets"),
        ("GET", "/runs/00000000-0000-0000-0000-000000000000"),
        ("GET", "/docs.json"),
    ]:
        refused = httpx.request(method, f"{platform.api}{path}", timeout=10)
        assert refused.status_code == 401, (path, refused.text)
        wrong = httpx.request(
            method, f"{platform.api}{path}", headers={"X-API-Key": "wrong"}, timeout=10
        )
        assert wrong.status_code == 401


def test_fuzzed_control_requests_get_no_5xx_and_documented_answers(platform: Running) -> None:
    st = str(Path(sys.executable).parent / "st")
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
    command = [st, "run", f"{platform.api}/docs.json", "--checks", ",".join(checks)]
    command += ["--max-examples", str(FUZZ_EXAMPLES), "--seed", "5", "--request-timeout", "60"]
    command += ["--suppress-health-check", "too_slow"]  # example generation, as in test_fuzz
    command += ["--no-color", "--generation-database", "none", "--continue-on-failure"]
    command += ["--header", f"Authorization: Bearer {API_KEY}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"(\d+) generated", result.stdout), result.stdout[-3000:]


def test_up_twice_starts_no_second_copy_and_restarts_what_died(platform: Running) -> None:
    pids = {part: _recorded_pid(platform.home, part) for part in PARTS}
    again = mlaas_cli(platform.environment, platform.home, *platform.up)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already up") == len(PARTS)
    assert {part: _recorded_pid(platform.home, part) for part in PARTS} == pids

    # The MLflow server's leader killed from outside: its workers still hold the port.
    os.kill(pids["mlflow"], signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pids["mlflow"]).wait(timeout=10)
    status = mlaas_cli(platform.environment, platform.home, "status").stdout
    assert _states(status)["mlflow"] == "dead"
    restarted = mlaas_cli(platform.environment, platform.home, *platform.up)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "mlflow: pid" in restarted.stdout and "starting it again" in restarted.stdout
    assert _recorded_pid(platform.home, "prefect") == pids["prefect"]
    new_mlflow_pid = _recorded_pid(platform.home, "mlflow")
    assert new_mlflow_pid != pids["mlflow"]
    assert not groups_alive({pids["mlflow"]}), "the dead server's workers were left running"
    assert httpx.get(f"{platform.mlflow}/health", timeout=5).status_code == 200
    # The model servers the API started live on through a restart of another part.
    servers = [p.stem for p in (platform.home / "run").glob("serve-*.json")]
    assert _states(mlaas_cli(platform.environment, platform.home, "status").stdout) == {
        **dict.fromkeys(PARTS, "up"),
        **dict.fromkeys(servers, "up"),
    }


def test_up_refuses_a_port_another_program_holds_and_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        refused = mlaas_cli(
            environment,
            home,
            "up",
            *("--prefect-port", str(taken), "--mlflow-port", str(free_port())),
            *("--params", str(PROJECT_ROOT / "params.yaml")),
        )
    assert refused.returncode == 2
    assert f"prefect: port {taken} on 127.0.0.1 is already in use" in refused.stderr
    assert "--prefect-port N" in refused.stderr and "Traceback" not in refused.stderr
    assert not list((home / "run").glob("*.json"))
