"""Team mode (`mlaas up --team`): PostgreSQL, MLflow with authentication and proxied artifacts,
Prefect on PostgreSQL with a process work pool and two workers, the control API: real processes
on free loopback ports, started once for the module.

Two pipelines trained at once through the control API run on the two workers and are served;
four "machines" (each its own MLAAS_HOME, joined by URLs and credentials only) register one
pipeline at the same moment and get versions 1..4 with one champion, through the registry's
PostgreSQL locks; MLflow and Prefect refuse requests without or with wrong credentials; a
client the tracking server refuses or cannot reach stops before any work; PostgreSQL stopped
mid-run fails the run with a message naming the server, and the next run completes; outside
clients (MlflowClient, `models:/NAME@champion`, `prefect deployment ls`) see what mlaas made;
a pipeline made from an uploaded table, first trained by another "machine"'s worker (its own
MLAAS_HOME and checkout), is reported by the control API and served on the stack's machine; a
client machine trains, lists and serves with URLs and credentials only;
no secret reaches a log, a record, the artifact store, a Bento or the databases' dump.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from tests.conftest import PROJECT_ROOT, groups_alive, mlaas_cli, recorded_pids

from mlaas.core.settings import Settings
from mlaas.orchestration.heartbeats import SILENT_RUN_SECONDS
from mlaas.serving.processes import free_port, served
from mlaas.stores.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.team]
API_KEY = "team-test-key-0123456789abcdef"
PIPELINES = {"team-wine": "wine", "team-cancer": "breast_cancer"}
SHARED = "team-shared"
MACHINES = 4
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
# A worker starts a flow-run process (imports torch, MLflow, Prefect) and trains a logistic
# regression; registering sends the model folder through MLflow's artifact proxy. Generous:
# the machine has 2 cores and runs another test worker beside this one.
RUN_ENDS_WITHIN_SECONDS = 420
SERVER_STARTS_WITHIN_SECONDS = 300


@dataclass(frozen=True)
class Team:
    home: Path
    folder: Path
    api: str
    prefect: str
    mlflow: str
    postgres_port: int
    environment: dict[str, str]
    """The test's environment: no PREFECT_/MLAAS_ variable of the session's own."""
    up: tuple[str, ...]
    """The `mlaas up --team` arguments it was started with."""

    @property
    def secrets(self) -> dict[str, str]:
        return dict(json.loads((self.home / "team" / "secrets.json").read_text()))

    @property
    def client_environment(self) -> dict[str, str]:
        """What the README tells a second machine to export."""
        secrets = self.secrets
        return {
            "MLAAS_TRACKING_URI": self.mlflow,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": secrets["mlflow_password"],
            "MLAAS_LOCK_URI": (
                f"postgresql://mlaas:{secrets['postgres_password']}@127.0.0.1:"
                f"{self.postgres_port}/mlaas"
            ),
            "PREFECT_API_URL": f"{self.prefect}/api",
            "PREFECT_API_AUTH_STRING": f"admin:{secrets['prefect_password']}",
        }

    def prefect_api(self, path: str) -> Any:
        """A GET of the team's Prefect API, with its credentials."""
        answer = httpx.get(
            f"{self.prefect}/api{path}",
            auth=("admin", self.secrets["prefect_password"]),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.api}{path}", headers=headers, timeout=60, **kwargs)


def _mlaas(
    environment: dict[str, str], home: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return mlaas_cli(environment, home, *args, timeout=timeout)


def _params(project_settings: Settings, folder: Path, name: str, source: str) -> Path:
    params = project_settings.as_params()
    params["pipeline"].update(name=name, family="tabular")
    params["load"].update(source=source)
    params["validate"].update(min_rows=100)
    params["train"].update(model={"name": "logistic_regression"})
    params["serve"].update(port=free_port())
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def team(project_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    folder = tmp_path_factory.mktemp("team")
    home = folder / "home"
    given = [_params(project_settings, folder, name, src) for name, src in PIPELINES.items()]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    environment["MLAAS_API_KEY"] = API_KEY
    ports = {name: free_port() for name in ("prefect", "mlflow", "api", "postgres")}
    up = (
        "up",
        "--team",
        *(arg for path in given for arg in ("--params", str(path))),
        *(arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))),
    )
    started = _mlaas(environment, home, *up)
    pids: set[int] = set()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Team(
            home=home,
            folder=folder,
            api=f"http://127.0.0.1:{ports['api']}",
            prefect=f"http://127.0.0.1:{ports['prefect']}",
            mlflow=f"http://127.0.0.1:{ports['mlflow']}",
            postgres_port=ports["postgres"],
            environment=environment,
            up=up,
        )
        pids = recorded_pids(home)
    finally:
        pids |= recorded_pids(home)
        stopped = _mlaas(environment, home, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not groups_alive(pids), "a process of ours outlived `mlaas down`"
    assert not list((home / "run").glob("*.json"))


def _wait_for_run(team: Team, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_ENDS_WITHIN_SECONDS
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = team.call("GET", f"/runs/{run_id}").json()
        if run["state"] in FINAL:
            return run
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not end in {RUN_ENDS_WITHIN_SECONDS} s: {run}")


def _wait_for_server(team: Team, pipeline: str) -> str:
    deadline = time.monotonic() + SERVER_STARTS_WITHIN_SECONDS
    while time.monotonic() < deadline:
        server = team.call("GET", f"/pipelines/{pipeline}").json()["server"]
        if server["state"] == "up":
            return str(server["url"])
        time.sleep(2)
    raise AssertionError(f"no model server for {pipeline}: {team.call('GET', '/pipelines').text}")


def _mlflow_client(team: Team) -> Any:
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = team.secrets["mlflow_password"]
    return MlflowClient(tracking_uri=team.mlflow, registry_uri=team.mlflow)


def test_status_says_team_mode_and_every_part_is_up(team: Team) -> None:
    status = _mlaas(team.environment, team.home, "status").stdout
    parts = {line.split()[0]: line.split()[1] for line in status.split("\n\n")[0].splitlines()[1:]}
    expected = ("postgres", "prefect", "mlflow", "deployments", "worker-1", "worker-2", "api")
    assert {name: parts.get(name) for name in expected} == dict.fromkeys(expected, "up"), status
    assert "mode: team" in status
    pool = team.prefect_api("/work_pools/mlaas")
    assert pool["type"] == "process"
    # The checks read this machine's prediction logs: only the stack's workers take them.
    for name in PIPELINES:
        assert team.prefect_api(f"/deployments/name/monitor/{name}")["work_queue_name"] == "stack"
        training = team.prefect_api(f"/deployments/name/training_pipeline/{name}")
        assert training["work_queue_name"] == "default"


def test_two_pipelines_train_at_once_on_the_two_workers_and_are_served(team: Team) -> None:
    started = {}
    for name in PIPELINES:
        answer = team.call("POST", f"/pipelines/{name}/runs", json={"reason": "team test"})
        assert answer.status_code == 202, answer.text
        started[name] = answer.json()["id"]
    runs = {name: _wait_for_run(team, run_id) for name, run_id in started.items()}
    for name, run in runs.items():
        assert run["state"] == "COMPLETED", (name, run)
        assert run["outcome"]["version"]["version"] == 1
        assert run["outcome"]["decision"]["promoted"] is True
    # Each worker takes one run at a time: two runs at once were taken by both workers.
    taken = {}
    for worker in ("worker-1", "worker-2"):
        log = (team.home / "logs" / f"{worker}.log").read_text()
        # The worker that ran it relays its flow run's log (the other may only have tried).
        taken[worker] = {name for name, run_id in started.items() if f"flow-run/{run_id}" in log}
    assert sorted(len(names) for names in taken.values()) == [1, 1], taken
    flow_runs = [team.prefect_api(f"/flow_runs/{run_id}") for run_id in started.values()]
    assert {run["work_pool_name"] for run in flow_runs} == {"mlaas"}

    client = _mlflow_client(team)
    for name in PIPELINES:
        versions = client.search_model_versions(f"name='{name}'")
        assert sorted(int(v.version) for v in versions) == [1]
        assert int(client.get_model_version_by_alias(name, "champion").version) == 1
        # The model's files went through the server's proxy, not to a path of this machine.
        assert client.get_model_version(name, "1").source.startswith("models:/")
        run = client.get_run(versions[0].run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
    # The champions served by the model servers the control API started.
    for name, source in PIPELINES.items():
        url = _wait_for_server(team, name)
        answer = _predict(url, source)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == 1


def _predict(url: str, source: str) -> httpx.Response:
    """The model server at `url` asked about the first row of the shipped data set `source`."""
    return httpx.post(
        f"{url}/predict",
        json={"instances": [_first_row(source)]},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )


def _first_row(source: str) -> dict[str, Any]:
    """The first row of the shipped data set, as its pipeline's load stage names the columns."""
    from mlaas.core.settings import LoadSettings
    from mlaas.families.tabular import TabularFamily

    table = TabularFamily().load(LoadSettings(source=source, max_rows=10))
    row: dict[str, Any] = table.to_pandas().drop(columns=["target"]).iloc[0].to_dict()
    return row


def test_four_machines_registering_one_pipeline_at_once_get_versions_one_to_four(
    team: Team, project_settings: Settings
) -> None:
    """Each "machine" has its own MLAAS_HOME (its own files and file locks) and only the
    stack's URLs and credentials: the registry's PostgreSQL locks are all they share."""
    params = _params(project_settings, team.folder, SHARED, "wine")
    environment = {**team.environment, **team.client_environment}

    def run_on_machine(number: int) -> subprocess.CompletedProcess[str]:
        home = team.folder / f"machine-{number}"
        return _mlaas(environment, home, "run", "--params", str(params), timeout=900)

    with ThreadPoolExecutor(max_workers=MACHINES) as pool:
        finished = list(pool.map(run_on_machine, range(1, MACHINES + 1)))
    for result in finished:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = _mlflow_client(team)
    versions = client.search_model_versions(f"name='{SHARED}'")
    assert sorted(int(v.version) for v in versions) == list(range(1, MACHINES + 1))
    # An alias names one version by construction; what the locks keep consistent is that every
    # version but the champion was decided against a champion already there.
    champion = int(client.get_model_version_by_alias(SHARED, "champion").version)
    each = [client.get_model_version(SHARED, str(n)) for n in range(1, MACHINES + 1)]
    assert [int(v.version) for v in each if "champion" in v.aliases] == [champion]
    decisions = {int(v.version): json.loads(v.tags["mlaas.decision"]) for v in each}
    promoted = {n for n, d in decisions.items() if d["promoted"]}
    # Decided in turn (registering and promoting are separate turns, so not in version order):
    # exactly one run found no champion, where runs racing would both have; every other run was
    # compared with a version promoted before it; the champion is one that was promoted.
    assert len([n for n, d in decisions.items() if d["champion_version"] is None]) == 1
    compared = {d["champion_version"] for d in decisions.values()} - {None}
    assert compared <= promoted and champion in promoted, decisions
    # Every machine's flow run is in the team's Prefect, and the four used their own folders.
    for number in range(1, MACHINES + 1):
        assert (team.folder / f"machine-{number}" / "pipelines" / SHARED / "registry").is_dir()


def test_a_pipeline_first_trained_on_another_machine_is_reported_and_served_here(
    team: Team,
) -> None:
    """Another machine joins as the README says: the stack's URLs and credentials, a
    `$MLAAS_HOME` and a checkout of its own, `prefect worker start` on the pool's `default`
    queue. A pipeline is created over the control API from an uploaded table; with the stack's
    two workers paused, its first run can only go to that machine: it trains with the params
    document the deployment carries, on the upload it fetches from the team's artifact store,
    in its own folders, registers in the team's registry, and the API reports its outcome from
    the Prefect server. The stack's machine then packages that champion from the registry and
    serves it."""
    from sklearn.datasets import load_wine

    name = "team-joined"
    uploaded = team.call(
        "POST",
        "/datasets?filename=wine.csv",
        content=load_wine(as_frame=True).frame.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv"},
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["id"]
    document = {
        "pipeline": {"name": name, "family": "tabular"},
        "load": {"dataset": dataset, "target": "target"},
        "validate": {"min_rows": 100},
        "train": {"model": {"name": "logistic_regression"}},
        # A port of its own: left to the API, it would be the first from 3001 that this stack
        # serves nothing on, which the platform test's stack (another worker of the suite, its
        # own catalog) hands out too; the second server to start would wait for the first.
        "serve": {"port": free_port()},
    }
    elsewhere = team.folder / "other-machine"
    # Nothing of this test session's workspace: the other machine's user sets only these.
    own = Workspace(elsewhere).environment()
    environment = {
        **{k: v for k, v in team.environment.items() if k not in own},
        **team.client_environment,
        "MLAAS_HOME": str(elsewhere),
    }
    stack_workers = [
        psutil.Process(json.loads((team.home / "run" / f"{worker}.json").read_text())["pid"])
        for worker in ("worker-1", "worker-2")
    ]
    paused = [p for worker in stack_workers for p in (worker, *worker.children(recursive=True))]
    # A checkout at another path: its runs start there (`working_dir: .`), where the params'
    # paths inside the project (the bentofile, the Bento's `src`) point.
    checkout = team.folder / "other-checkout"
    shutil.copytree(PROJECT_ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__py*"))
    shutil.copy(PROJECT_ROOT / "bentofile.yaml", checkout)
    elsewhere.mkdir()
    log = elsewhere / "worker.log"  # searched for secrets with the rest of its files
    for process in paused:
        process.suspend()
    with log.open("w") as output:
        worker = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prefect"),
                *("worker", "start", "--pool", "mlaas", "--work-queue", "default"),
                *("--type", "process", "--name", "other-machine", "--limit", "1"),
            ],
            env=environment,
            cwd=checkout,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        created = team.call("POST", "/pipelines", json=document)
        assert created.status_code == 201, created.text
        answer = team.call("POST", f"/pipelines/{name}/runs", json={"reason": "another machine"})
        assert answer.status_code == 202, answer.text
        run = _wait_for_run(team, answer.json()["id"])
        assert run["state"] == "COMPLETED", (run, log.read_text()[-3000:])
        assert run["outcome"]["version"]["version"] == 1, run
        assert run["outcome"]["decision"]["promoted"] is True, run
        assert f"flow-run/{run['id']}" in log.read_text()
    finally:
        # `prefect worker start` turns a first SIGTERM into a SIGINT to itself, which it can
        # lose (seen in CI: it logged the SIGINT and went on taking runs); a second signal is its
        # kill. The stack's workers are resumed whatever happens here: paused, every later run
        # of the module would go to this one.
        try:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=60)
        finally:
            for process in paused:
                process.resume()
    # What the run carried: the settings themselves, not a path or a folder of this machine.
    parameters = team.prefect_api(f"/flow_runs/{run['id']}")["parameters"]
    assert parameters["params"]["pipeline"]["name"] == name and "home" not in parameters
    assert parameters["params"]["package"]["bentofile"] == "bentofile.yaml"
    # The upload, fetched from the team's artifact store (it was never on that machine).
    assert parameters["params"]["load"]["dataset"] == dataset
    assert (Workspace(elsewhere).datasets_dir / f"{dataset}.csv").is_file()
    assert (elsewhere / "pipelines" / name / "registry").is_dir()
    assert list((Workspace(elsewhere).bentoml_home / "bentos" / name).glob("*/bento.yaml"))
    assert not (team.home / "pipelines" / name / "registry").exists()  # not trained here
    # Served here: packaged from the registry by the control API, since no run here did.
    url = _wait_for_server(team, name)
    served = _predict(url, "wine")
    assert served.status_code == 200, served.text
    assert served.json()["model"]["version"] == 1


def test_a_client_machine_trains_lists_and_serves_with_urls_and_credentials_only(
    team: Team,
) -> None:
    """`mlaas train`, `mlaas pipelines` and `mlaas serve` on a machine that has only what the
    README tells it to export (and the control API's URL and key): the first two ask the
    stack's control API; `mlaas serve` packages the team's champion from the registry, on a
    machine that never trained it, and serves it."""
    name, source = next(iter(PIPELINES.items()))
    home = team.folder / "client-machine"
    own = Workspace(home).environment()
    environment = {
        **{k: v for k, v in team.environment.items() if k not in own},
        **team.client_environment,
        "MLAAS_API_URL": team.api,
    }
    trained = _mlaas(environment, home, "train", name, "--reason", "from a client", "--wait")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run = json.loads(trained.stdout[trained.stdout.index("{") :])
    assert run["state"] == "COMPLETED" and run["reason"] == "from a client", run
    listed = _mlaas(environment, home, "pipelines")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert name in {pipeline["name"] for pipeline in json.loads(listed.stdout)}
    refused = _mlaas({**environment, "MLAAS_API_KEY": "wrong"}, home, "pipelines")
    assert refused.returncode != 0 and "MLAAS_API_KEY" in refused.stderr, refused.stderr

    champion = int(_mlflow_client(team).get_model_version_by_alias(name, "champion").version)
    workspace = Workspace(home, team.mlflow, environment["MLAAS_LOCK_URI"])
    log = team.folder / "client-serve.log"
    with served(
        team.folder / f"{name}.yaml", workspace, log, environment=environment, ready_within=300
    ) as url:
        answer = _predict(url, source)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["version"] == champion
    assert not (home / "pipelines" / name / "registry").exists()  # trained elsewhere


def test_mlflow_and_prefect_refuse_requests_without_or_with_wrong_credentials(team: Team) -> None:
    for api, path, password in (
        (team.mlflow, "/api/2.0/mlflow/registered-models/search", "mlflow_password"),
        (team.prefect, "/api/deployments/filter", "prefect_password"),
    ):
        call = httpx.get if api == team.mlflow else httpx.post
        assert call(f"{api}{path}", timeout=10).status_code == 401, api
        wrong = call(f"{api}{path}", auth=("admin", "not-the-password"), timeout=10)
        assert wrong.status_code == 401, api
        right = call(f"{api}{path}", auth=("admin", team.secrets[password]), timeout=10)
        assert right.status_code == 200, (api, right.text)
    # Health checks stay open (the supervisor's and a load balancer's probes).
    assert httpx.get(f"{team.mlflow}/health", timeout=10).status_code == 200
    assert httpx.get(f"{team.prefect}/api/health", timeout=10).status_code == 200


def test_outside_clients_see_what_mlaas_made(team: Team) -> None:
    import mlflow.pyfunc

    _mlflow_client(team)  # credentials for the fluent API too
    mlflow.set_tracking_uri(team.mlflow)
    model = mlflow.pyfunc.load_model("models:/team-wine@champion")
    answer = model.predict([_first_row("wine")])
    assert len(answer) == 1
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "deployment", "ls"],
        env={
            **team.environment,
            "PREFECT_API_URL": f"{team.prefect}/api",
            "PREFECT_API_AUTH_STRING": team.client_environment["PREFECT_API_AUTH_STRING"],
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in PIPELINES:
        assert f"training_pipeline/{name}" in listed.stdout, listed.stdout


def test_model_servers_answer_while_mlflow_is_down_and_up_brings_it_back(team: Team) -> None:
    """A model server serves the model it has: the tracking server going away changes
    nothing for /predict. `up --team` again starts what died and leaves the rest running."""
    record = json.loads((team.home / "run" / "mlflow.json").read_text())
    untouched = {
        name: json.loads((team.home / "run" / f"{name}.json").read_text())["pid"]
        for name in ("postgres", "prefect", "worker-1", "api")
    }
    url = _wait_for_server(team, "team-wine")  # asked before: the API's view reads the registry
    os.killpg(record["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(record["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(5):
        answer = _predict(url, "wine")
        assert answer.status_code == 200, answer.text
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    # The control API says which server is away, at once, rather than waiting on MLflow's
    # retries (the httpx timeout bounds how long "at once" may be).
    described = team.call("GET", "/pipelines/team-wine")
    assert described.status_code == 503, described.text
    assert f"MLflow tracking store at {team.mlflow}" in described.json()["error"]
    readiness = team.call("GET", "/readyz")
    assert readiness.status_code == 503, readiness.text
    assert readiness.json()["prefect"] == "ok" and team.mlflow in readiness.json()["mlflow"]
    # An upload the team's store cannot take is refused whole, naming the server.
    kept = sorted((team.home / "datasets").glob("*"))
    refused = team.call(
        "POST",
        "/datasets?filename=late.csv",
        content=b"x,label\n" + b"".join(b"%d,%d\n" % (n, n % 2) for n in range(150)),
        headers={"Content-Type": "text/csv"},
    )
    assert refused.status_code == 503, refused.text
    assert f"MLflow tracking store at {team.mlflow}" in refused.json()["error"], refused.text
    assert sorted((team.home / "datasets").glob("*")) == kept
    again = _mlaas(team.environment, team.home, *team.up)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "mlflow: pid" in again.stdout and "starting it again" in again.stdout, again.stdout
    for name, pid in untouched.items():
        assert f"{name}: already up" in again.stdout, again.stdout
        assert json.loads((team.home / "run" / f"{name}.json").read_text())["pid"] == pid
    search = f"{team.mlflow}/api/2.0/mlflow/registered-models/search"
    auth = ("admin", team.secrets["mlflow_password"])
    assert httpx.get(search, auth=auth, timeout=30).status_code == 200


def test_a_client_the_server_refuses_or_cannot_reach_stops_before_any_work(
    team: Team, project_settings: Settings
) -> None:
    params = _params(project_settings, team.folder, "team-refused", "wine")
    right = {**team.environment, **team.client_environment}
    closed = free_port()
    cases = {
        "wrong password": (
            {**right, "MLFLOW_TRACKING_PASSWORD": "not-it"},
            [f"server at {team.mlflow} refused the credentials", "MLFLOW_TRACKING_PASSWORD"],
        ),
        "no credentials": (
            {k: v for k, v in right.items() if not k.startswith("MLFLOW_TRACKING_")},
            [f"server at {team.mlflow} asks for credentials", "MLFLOW_TRACKING_PASSWORD"],
        ),
        "no server": (
            {**right, "MLAAS_TRACKING_URI": f"http://127.0.0.1:{closed}"},
            [f"server at http://127.0.0.1:{closed} does not answer", "mlaas up --team"],
        ),
    }
    for case, (environment, said) in cases.items():
        home = team.folder / f"refused-{case.replace(' ', '-')}"
        result = _mlaas(environment, home, "run", "--params", str(params), timeout=300)
        assert result.returncode == 2, (case, result.stdout[-2000:], result.stderr[-2000:])
        assert all(part in result.stderr for part in said), (case, result.stderr)
        assert "Traceback" not in result.stderr, (case, result.stderr)
        assert not (home / "pipelines").exists(), case  # nothing loaded, nothing written
    client = _mlflow_client(team)
    assert client.get_experiment_by_name("team-refused") is None
    assert not client.search_registered_models("name='team-refused'")


def test_postgres_stopped_mid_run_fails_it_naming_the_server_and_the_next_run_completes(
    team: Team, project_settings: Settings
) -> None:
    """PostgreSQL stops after the data is split: the run's next MLflow request fails once
    MLflow's client has retried, and the run ends with a message naming the servers, leaving
    no version behind; `up --team` starts PostgreSQL again, and the next run completes."""
    name = "team-fault"
    params = _params(project_settings, team.folder, name, "wine")
    home = team.folder / "fault-machine"
    # Fewer retries than the defaults (a user's settings): the test waits for them to run out.
    environment = {
        **team.environment,
        **team.client_environment,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "PREFECT_CLIENT_MAX_RETRIES": "1",
    }
    postgres = json.loads((team.home / "run" / "postgres.json").read_text())["pid"]
    log = team.folder / "fault-run.log"
    command = [str(Path(sys.executable).parent / "mlaas"), "--home", str(home), "run"]
    with log.open("w") as output:
        run = subprocess.Popen(
            [*command, "--params", str(params)],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + RUN_ENDS_WITHIN_SECONDS
        while "Task run 'split" not in log.read_text() and time.monotonic() < deadline:
            assert run.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(postgres, signal.SIGINT)  # PostgreSQL's fast shutdown: sessions are cut
        returncode = run.wait(timeout=RUN_ENDS_WITHIN_SECONDS)
    finally:
        run.kill()
        run.wait()
    said = log.read_text()
    assert returncode == 2, said[-4000:]
    message = said[said.index("mlaas: error:") :]
    assert f"at {team.mlflow}" in message or f"at {team.prefect}" in message, message
    assert "mlaas up --team" in message, message

    again = _mlaas(team.environment, team.home, *team.up)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "postgres: pid" in again.stdout and "starting it again" in again.stdout, again.stdout
    completed = _mlaas(environment, home, "run", "--params", str(params), timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    client = _mlflow_client(team)
    # The failed run registered nothing: the run after it made version 1, the champion.
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'")) == [1]
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert team.call("GET", "/readyz").json() == {"ready": True, "prefect": "ok", "mlflow": "ok"}
    # The cut-off run could not tell Prefect how it ended: its heartbeats stopped, and the
    # server's automation (made by `up`) marks it Crashed instead of leaving it Running.
    deadline = time.monotonic() + SILENT_RUN_SECONDS * 3
    while True:
        every_run = _prefect_post(team, "/flow_runs/filter", {"limit": 200})
        runs = [run for run in every_run if run["parameters"].get("params") == str(params)]
        states = sorted(run["state_type"] for run in runs)
        if states == ["COMPLETED", "CRASHED"] or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert states == ["COMPLETED", "CRASHED"], runs
    crashed = next(run for run in runs if run["state_type"] == "CRASHED")
    assert "no heartbeat" in crashed["state"]["message"], crashed["state"]


def _prefect_post(team: Team, path: str, body: dict[str, Any]) -> Any:
    answer = httpx.post(
        f"{team.prefect}/api{path}",
        json=body,
        auth=("admin", team.secrets["prefect_password"]),
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_no_secret_reaches_logs_records_artifacts_bentos_or_the_databases(team: Team) -> None:
    secrets = list(team.secrets.values())
    leaks = []
    searched = 0
    # The secrets file and MLflow's auth settings hold them by design (both 0600).
    by_design = {team.home / "team" / "secrets.json", team.home / "team" / "mlflow-auth.ini"}
    machines = [f"machine-{n}" for n in range(1, MACHINES + 1)]
    machines += ["other-machine", "client-machine"]
    for folder in (team.home, *(team.folder / machine for machine in machines)):
        for path in folder.rglob("*"):
            if path in by_design or not path.is_file() or "postgres" in path.parts:
                continue
            searched += 1
            data = path.read_bytes()
            leaks += [str(path) for secret in secrets if secret.encode() in data]
    for path in by_design:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert searched > 100 and not leaks, leaks
    pg_dump = next(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))
    address = ("-h", "127.0.0.1", "-p", str(team.postgres_port), "-U", "mlaas")
    for database in ("mlflow", "mlflow_auth", "prefect"):
        dump = subprocess.run(
            [str(pg_dump), *address, database],
            env={**team.environment, "PGPASSWORD": team.secrets["postgres_password"]},
            capture_output=True,
            timeout=120,
        )
        assert dump.returncode == 0, dump.stderr
        assert len(dump.stdout) > 1000
        assert not [secret for secret in secrets if secret.encode() in dump.stdout], database
