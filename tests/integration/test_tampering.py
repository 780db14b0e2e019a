"""Model files are trusted only as registered: changed bytes are refused at package and at serve
time, and no model file is ever unpickled into running code.

The tamper cases change real bytes of the session pipeline's real artifacts (the MLflow
artifact store, the BentoML store) and put them back afterwards, so later tests see the
workspace as it was. The pickle cases craft payloads that write a marker file when unpickled,
show that an unsafe load would run them, and that mlaas's loading refuses them unrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import skops.io
import torch

from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import CnnSettings, LogisticRegressionSettings
from mlaas.families.image_models import ConvNet, PixelPreprocessor
from mlaas.modeling.bundle import MODEL_SUBDIR, TamperedModel
from mlaas.modeling.models import (
    PIPELINE_FILE,
    WEIGHTS_FILE,
    NetworkModel,
    UntrustedModel,
    load_model,
)
from mlaas.serving.processes import ServerFailed, free_port, served
from mlaas.stages.table import run_stage
from mlaas.stores.registry import CHAMPION, MODEL_ARTIFACT, Registry
from mlaas.stores.workspace import Workspace


@contextmanager
def flipped_byte(path: Path) -> Iterator[None]:
    """One byte of the file changed (in the middle, where the weights are), then restored."""
    original = path.read_bytes()
    middle = len(original) // 2
    path.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])
    try:
        yield
    finally:
        path.write_bytes(original)


def registered_weights(workspace: Workspace, name: str) -> Path:
    """The champion's weights file where MLflow's artifact store keeps it."""
    registry = Registry(workspace)
    champion = registry.version_with_alias(name, CHAMPION)
    assert champion is not None
    root = registry.client.get_model_version_download_uri(name, str(champion.version))
    return Path(urlparse(root).path) / "artifacts" / MODEL_ARTIFACT / WEIGHTS_FILE


def packaged_weights(name: str) -> Path:
    """The champion's weights file in the BentoML model store (what a served Bento loads)."""
    import bentoml

    return Path(bentoml.models.get(f"{name}:latest").path) / MODEL_SUBDIR / WEIGHTS_FILE


@pytest.mark.slow
def test_a_tampered_registered_model_is_not_packaged(
    pipeline_run: dict[str, Any], session_workspace: Workspace
) -> None:
    settings = pipeline_run["settings"]
    weights = registered_weights(session_workspace, settings.pipeline.name)
    assert weights.is_file()
    # Other serving settings: the package stage cannot reuse the Bento built by the run.
    repackage = settings.model_copy(
        update={"serve": settings.serve.model_copy(update={"batch_wait_ms": 7.0})}
    )
    with flipped_byte(weights), pytest.raises(TamperedModel, match="recorded at registration"):
        run_stage("package", repackage, session_workspace)


@pytest.mark.slow
def test_mlaas_serve_refuses_a_tampered_packaged_model(
    pipeline_run: dict[str, Any], session_workspace: Workspace, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    tampered = flipped_byte(packaged_weights(pipeline_run["settings"].pipeline.name))
    refused = pytest.raises(ServerFailed, match="exited with 2")
    with tampered, refused, served(pipeline_run["params"], session_workspace, log):
        pytest.fail("the server became ready with tampered model files")
    assert "recorded at registration" in log.read_text()


@pytest.mark.slow
def test_the_service_itself_refuses_a_tampered_packaged_model(
    pipeline_run: dict[str, Any], session_workspace: Workspace, tmp_path: Path
) -> None:
    """`bentoml serve` of the Bento without the CLI's check (as in a container): the service
    refuses the model in its constructor and never reports ready."""
    import bentoml

    name = pipeline_run["settings"].pipeline.name
    bento = bentoml.bentos.get(f"{name}:latest")
    port = free_port()
    log = tmp_path / "bentoml.log"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", str(bento.tag)]
    with flipped_byte(packaged_weights(name)), log.open("w") as output:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while "TamperedModel" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert "recorded at registration" in log.read_text(), log.read_text()[-3000:]
            with suppress(httpx.TransportError):
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                assert ready.status_code != 200
        finally:
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


class CodeOnUnpickle:
    """What a malicious model file holds: unpickling it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.marker), "the payload ran"))

    def __setstate__(self, state: dict[str, Any]) -> None:  # skops restores objects with it
        Path(state["marker"]).write_text("the payload ran")


def _image_model_dir(folder: Path) -> Path:
    card = ModelCard(
        family="image",
        task="classification",
        dataset="digits",
        target="label",
        model=CnnSettings(conv_channels=[2], hidden_units=4),
        classes=list(range(10)),
        inputs={"shape": [8, 8]},
    )
    network = ConvNet((8, 8, 1), card.model, 10)  # type: ignore[arg-type]
    NetworkModel(card, PixelPreprocessor(), network).save(folder)
    return folder


def test_a_torch_weights_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    model_dir = _image_model_dir(tmp_path / "model")
    assert load_model(model_dir).card.family == "image"  # the honest folder loads
    marker = tmp_path / "marker"
    torch.save({"weights": CodeOnUnpickle(marker)}, model_dir / WEIGHTS_FILE)

    torch.load(model_dir / WEIGHTS_FILE, weights_only=False)  # what an unsafe loader would do
    assert marker.read_text() == "the payload ran"
    marker.unlink()

    with pytest.raises(UntrustedModel, match="refusing to load it"):
        load_model(model_dir)
    assert not marker.exists()


def test_a_skops_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    card = ModelCard(
        family="tabular",
        task="classification",
        dataset="shop",
        target="label",
        model=LogisticRegressionSettings(),
        classes=["no", "yes"],
        inputs={"features": {"size": "number"}},
    )
    (model_dir / "card.json").write_text(card.model_dump_json())
    marker = tmp_path / "marker"
    skops.io.dump({"model": CodeOnUnpickle(marker)}, model_dir / PIPELINE_FILE)
    payload_type = f"{CodeOnUnpickle.__module__}.{CodeOnUnpickle.__qualname__}"

    skops.io.load(model_dir / PIPELINE_FILE, trusted=[payload_type])  # an unsafe loader
    assert marker.read_text() == "the payload ran"
    marker.unlink()

    with pytest.raises(UntrustedModel, match=payload_type.replace(".", r"\.")):
        load_model(model_dir)
    assert not marker.exists()


def test_loading_reads_no_pickle_outside_the_model_folder() -> None:
    """The loaders' formats: tensors only (weights_only), skops with an allow-list, JSON."""
    source = (Path(__file__).parents[2] / "src" / "mlaas").rglob("*.py")
    unsafe = ("pickle.load(", "joblib.load(", "weights_only=False", "allow_pickle=True")
    offenders = [
        f"{path.name}: {pattern}"
        for path in source
        for pattern in unsafe
        if pattern in path.read_text()
    ]
    assert offenders == [], offenders
