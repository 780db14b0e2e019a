"""The registered MLflow model works outside mlaas as the endpoint does, for every family.

`mlflow.pyfunc.load_model("models:/NAME@champion")`, `mlflow models predict` and
`mlflow models serve` (both `--env-manager local`, real subprocesses) take the endpoint's
instances (uint8 or float pixel arrays or nested lists, records, texts, user/item pairs) and
answer its predictions; bad input is refused with a message naming the field. The models are
trained in a working folder of their own, which stays empty: nothing is written outside
$MLAAS_HOME.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from tests.conftest import shrink

from mlaas.core.settings import Settings
from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.modeling.models import load_model
from mlaas.modeling.pyfunc import InvalidInput, as_instances
from mlaas.serving.processes import free_port
from mlaas.stages.table import run_stage
from mlaas.stores.registry import CHAMPION, INSTANCES_SCHEMA_KEY, Registry
from mlaas.stores.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from mlaas.stores.workspace import Workspace

UP_TO_PROMOTION = ("load", "validate", "split", "train", "evaluate", "register", "promote")
FAST = {"max_epochs": 2, "batch_size": 64, "learning_rate": 0.01}
# One tiny model per family and task: (sections of params.yaml, an instance the model refuses,
# what the refusal must name).
MODELS: dict[str, tuple[dict[str, Any], Any, str]] = {
    "digits": ({"train": FAST}, [[300.0] * 8] * 8, "instances.0"),
    "cancer": (
        {
            "pipeline": {"family": "tabular"},
            "load": {"source": "breast_cancer"},
            "train": {"model": {"name": "logistic_regression"}},
        },
        {"colour": "red"},
        "instances.0.mean radius",
    ),
    "diabetes": (
        {
            "pipeline": {"family": "tabular"},
            "load": {"source": "diabetes"},
            "train": {"model": {"name": "ridge"}},
        },
        {"age": "old"},
        "instances.0",
    ),
    "news": (
        {
            "pipeline": {"family": "text"},
            "load": {"source": "bbc_news", "max_rows": 300, "max_text_chars": 30000},
            "train": {"model": {"name": "tfidf_linear", "hash_bits": 12}},
        },
        "   ",
        "instances.0",
    ),
    "movies": (
        {
            "pipeline": {"family": "recommendation"},
            "load": {"source": "movielens_100k", "max_rows": 3000},
            "evaluate": {"cv_folds": 2},
            "train": {**FAST, "model": {"name": "matrix_factorization", "factors": 4}},
        },
        {"user_id": "nobody", "item_id": "1"},
        "user_id 'nobody' is unknown",
    ),
}


def test_mlflow_forms_of_the_instances_become_the_json_list() -> None:
    pixels = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    assert as_instances(pixels) == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    assert as_instances([np.zeros((1, 2), np.float32)]) == [[[0.0, 0.0]]]
    frame = pd.DataFrame({"age": [30.0, np.nan], "plan": ["basic", None]})
    assert as_instances(frame) == [{"age": 30.0, "plan": "basic"}, {"age": None, "plan": None}]
    # What MLflow's scoring server makes of records sent as `instances`: a column per field.
    columns = {"age": np.array([30.0, None], dtype=object), "plan": np.array(["basic", "pro"])}
    assert as_instances(columns) == [{"age": 30.0, "plan": "basic"}, {"age": None, "plan": "pro"}]
    assert as_instances(np.array(["a text", "another"])) == ["a text", "another"]
    with pytest.raises(InvalidInput, match=r"wrap it in a list"):
        as_instances({"user_id": 1, "item_id": 2})
    with pytest.raises(InvalidInput, match="expected a list of instances, got str"):
        as_instances("a text")


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The working folder of this module's runs and commands; it must stay empty."""
    folder = tmp_path_factory.mktemp("working-folder")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def trained(
    project_settings: Settings, tmp_path_factory: pytest.TempPathFactory, elsewhere: Path
) -> tuple[Workspace, dict[str, Settings]]:
    """Each of MODELS trained, registered and promoted to champion in a workspace of its own."""
    workspace = Workspace(tmp_path_factory.mktemp("mlflow-model") / "home")
    pipelines = {}
    for name, (sections, _, _) in MODELS.items():
        merged = {**sections, "validate": {"min_rows": 20}}
        settings = shrink(project_settings, f"pyfunc-{name}", **merged)
        for stage in UP_TO_PROMOTION:
            run_stage(stage, settings, workspace)
        pipelines[name] = settings
    return workspace, pipelines


def _example(workspace: Workspace, settings: Settings) -> tuple[str, list[Any], list[Any]]:
    """The champion's URI, the request's instances logged beside it, and what the endpoint
    answers for them (the serving path: instances_to_features, the model, describe)."""
    name = settings.pipeline.name
    champion = Registry(workspace).version_with_alias(name, CHAMPION)
    assert champion is not None
    instances = Registry(workspace).run_json(champion.run_id, "example_request.json")["instances"]
    model = load_model(workspace.pipeline(name).model_dir)
    family = get_family(model.card.family)
    outputs = model.predict(family.instances_to_features(instances, model.card))
    return (
        f"models:/{name}@{CHAMPION}",
        instances,
        task_of(model.card).describe(outputs, model.card),
    )


def _pyfunc(workspace: Workspace, uri: str) -> Any:
    mlflow.set_tracking_uri(workspace.tracking_uri)
    return mlflow.pyfunc.load_model(uri)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_the_registered_model_takes_and_answers_what_the_endpoint_does(
    name: str, trained: tuple[Workspace, dict[str, Settings]]
) -> None:
    workspace, pipelines = trained
    uri, instances, answered = _example(workspace, pipelines[name])
    model = _pyfunc(workspace, uri)
    predictions = model.predict(instances)
    assert predictions == answered
    card = load_model(workspace.pipeline(pipelines[name].pipeline.name).model_dir).card
    first = predictions[0]
    if card.task == "classification":
        assert card.classes is not None and first["label"] in card.classes
        assert set(first["probabilities"]) == {str(label) for label in card.classes}
    else:
        assert set(first) == {"rating" if card.task == "rating" else "value"}
    if card.family == "image":
        # uint8 and float arrays, and their nested lists, are the same instances.
        pixels = np.asarray(instances)
        assert model.predict(pixels.round().astype(np.uint8)) == model.predict(
            pixels.round().tolist()
        )
        assert model.predict(pixels.astype(np.float32)) == answered
    if card.family in ("tabular", "recommendation"):
        assert model.predict(pd.DataFrame(instances)) == answered


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_bad_input_is_refused_naming_the_field(
    name: str, trained: tuple[Workspace, dict[str, Settings]]
) -> None:
    workspace, pipelines = trained
    uri, _, _ = _example(workspace, pipelines[name])
    _, bad, named = MODELS[name]
    model = _pyfunc(workspace, uri)
    with pytest.raises(MlflowException, match=named) as refused:
        model.predict([bad])
    assert refused.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="at least 1 item"):
        model.predict([])


@pytest.mark.slow
def test_the_signature_and_input_example_describe_the_endpoints_contract(
    trained: tuple[Workspace, dict[str, Settings]],
) -> None:
    workspace, pipelines = trained
    uri, instances, answered = _example(workspace, pipelines["cancer"])
    mlflow.set_tracking_uri(workspace.tracking_uri)
    info = mlflow.models.get_model_info(uri)
    # Outputs as the endpoint's predictions; inputs left to the model's own (pydantic) checks.
    assert info.signature.inputs is None
    outputs = {spec["name"]: spec["type"] for spec in info.signature.outputs.to_dict()}
    assert outputs == {"label": "string", "probabilities": "object"}  # malignant, benign
    schema = info.metadata[INSTANCES_SCHEMA_KEY]
    assert schema["type"] == "array" and schema["minItems"] == 1
    downloaded = Path(mlflow.artifacts.download_artifacts(uri))
    assert json.loads((downloaded / "input_example.json").read_text()) == instances
    serving = json.loads((downloaded / "serving_input_example.json").read_text())
    assert _pyfunc(workspace, uri).predict(serving["inputs"]) == answered


def _mlflow(workspace: Workspace) -> tuple[str, dict[str, str]]:
    """MLflow's CLI, run as a user with the project's environment activated would run it."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # `serve` runs uvicorn
        "MLAAS_HOME": str(workspace.home),
        "MLFLOW_TRACKING_URI": workspace.tracking_uri,
    }
    return str(bin_dir / "mlflow"), env


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_mlflow_models_predict_answers_the_endpoints_request(
    name: str, trained: tuple[Workspace, dict[str, Settings]], tmp_path: Path, elsewhere: Path
) -> None:
    workspace, pipelines = trained
    uri, instances, answered = _example(workspace, pipelines[name])
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": instances}))  # the endpoint's own body
    output = tmp_path / "predictions.json"
    mlflow_cli, env = _mlflow(workspace)
    command = [mlflow_cli, "models", "predict", "-m", uri, "-t", "json", "--env-manager", "local"]
    finished = subprocess.run(
        [*command, "-i", str(request), "-o", str(output)],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(output.read_text()) == {"predictions": answered}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_mlflow_models_serve_answers_the_endpoints_requests(
    name: str, trained: tuple[Workspace, dict[str, Settings]], tmp_path: Path, elsewhere: Path
) -> None:
    workspace, pipelines = trained
    uri, instances, answered = _example(workspace, pipelines[name])
    _, bad, named = MODELS[name]
    port = free_port()
    mlflow_cli, env = _mlflow(workspace)
    log = tmp_path / "serve.log"
    command = [mlflow_cli, "models", "serve", "-m", uri, "--env-manager", "local"]
    with log.open("w") as output:
        server = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            env=env,
            cwd=elsewhere,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base, server, log)
        answer = httpx.post(f"{base}/invocations", json={"instances": instances}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": answered}
        as_inputs = httpx.post(f"{base}/invocations", json={"inputs": instances}, timeout=60)
        assert as_inputs.json() == {"predictions": answered}
        refused = httpx.post(f"{base}/invocations", json={"instances": [bad]}, timeout=60)
        assert refused.status_code == 400
        assert named in refused.json()["message"]
    finally:
        _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the server and the uvicorn worker it started (its process group), by its PID."""
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _wait_until_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert server.poll() is None, f"mlflow models serve exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"not ready in 180 s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


@pytest.mark.slow
def test_nothing_is_written_outside_mlaas_home(
    trained: tuple[Workspace, dict[str, Settings]], elsewhere: Path
) -> None:
    workspace, pipelines = trained
    assert sorted(elsewhere.iterdir()) == []  # no ./mlruns, no other file
    client = Registry(workspace).client
    default = client.get_experiment("0")
    assert Path(urlparse(default.artifact_location).path).is_relative_to(workspace.home)
    for settings in pipelines.values():
        experiment = client.get_experiment_by_name(settings.pipeline.name)
        assert experiment is not None
        assert Path(urlparse(experiment.artifact_location).path).is_relative_to(workspace.home)
        assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
