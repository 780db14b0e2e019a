"""Multi-process training with Lightning DDP on CPU (gloo): two ranks launched by the training
process itself, two "nodes" of one rank each on loopback, and a rank killed mid-training."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow.tracking import MlflowClient
from tests.conftest import PROJECT_ROOT, shrink, write_params

from mlaas.core.records import SplitInfo, TrainingResult
from mlaas.core.settings import Settings, TrainSettings
from mlaas.families.image import ImageFamily
from mlaas.modeling.checkpoints import completed_epochs
from mlaas.modeling.fitting import FitOutcome, FitRequest, fit_model
from mlaas.serving.processes import free_port
from mlaas.stores.files import read_json, read_table, write_json
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
MLAAS = str(Path(sys.executable).parent / "mlaas")
WORKER = (sys.executable, "-m", "mlaas.modeling.train_worker")
TOLERANCE = 0.05  # validation accuracy, DDP against one process on the same splits
family = ImageFamily()


def _environment(home: Path) -> dict[str, str]:
    # Each run gets its own Prefect (ephemeral API, database under `home`).
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    return {**inherited, **Workspace(home).environment(), "PREFECT_LOGGING_LEVEL": "INFO"}


def _ddp_settings(project_settings: Settings, name: str, **train: Any) -> Settings:
    return shrink(
        project_settings,
        name,
        train={"strategy": "ddp", "devices": 2, "max_epochs": 4, **train},
    )


def _single_process_accuracy(settings: Settings, home: Path, tmp_path: Path) -> float:
    """The same settings on one process, on the splits the DDP run made."""
    paths = Workspace(home).pipeline(settings.pipeline.name)
    splits = SplitInfo.model_validate(read_json(paths.splits_record, "split"))
    train_table = read_table(splits.train.path, "split")
    card = family.model_card(train_table, settings.load, settings.train.model).model_copy(
        update={"seed": settings.pipeline.seed}
    )
    _, report = fit_model(
        family,
        card,
        train_table,
        read_table(splits.val.path, "split"),
        settings.train.single_process(),
        tmp_path / "single",
    )
    return report.val_metrics["val_accuracy"]


@pytest.fixture(scope="module")
def two_ranks(project_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`mlaas run` with train.strategy: ddp, devices: 2 on CPU: the training process launches
    its second rank itself."""
    folder = tmp_path_factory.mktemp("ddp")
    settings = _ddp_settings(project_settings, "ddp-digits")
    home = folder / "home"
    params = write_params(settings, folder)
    done = subprocess.run(
        [MLAAS, "--home", str(home), "run", "--params", str(params)],
        cwd=PROJECT_ROOT,
        env=_environment(home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return settings, home, output


def test_two_ranks_train_one_model_like_one_process(two_ranks: Any, tmp_path: Path) -> None:
    settings, home, output = two_ranks
    assert "rank 0 of world_size 2" in output and "rank 1 of world_size 2" in output
    paths = Workspace(home).pipeline("ddp-digits")
    training = TrainingResult.model_validate(read_json(paths.training_result, "train"))
    assert training.epochs == 4
    # Rank 0 alone logged: one value per epoch, none twice.
    client = MlflowClient(Workspace(home).tracking_uri)
    steps = [m.step for m in client.get_metric_history(training.run_id, "val_loss")]
    assert steps == [0, 1, 2, 3]
    ddp_accuracy = client.get_run(training.run_id).data.metrics["val_accuracy"]
    single = _single_process_accuracy(settings, home, tmp_path)
    print(f"val_accuracy: DDP 2 ranks {ddp_accuracy:.4f}, one process {single:.4f}")
    assert abs(ddp_accuracy - single) <= TOLERANCE


def test_two_nodes_of_one_rank_each_on_loopback(
    two_ranks: Any, project_settings: Settings, tmp_path: Path
) -> None:
    """Two launcher processes, as two machines would start them (NODE_RANK, MASTER_ADDR,
    MASTER_PORT): they find each other, train one model, and node 0 alone answers."""
    settings, home, _ = two_ranks
    workspace = Workspace(home)
    paths = workspace.pipeline("ddp-digits")
    splits = SplitInfo.model_validate(read_json(paths.splits_record, "split"))
    cfg = TrainSettings.model_validate(
        {**settings.train.model_dump(), "devices": 1, "num_nodes": 2, "strategy": "ddp"}
    )
    card = family.model_card(
        read_table(splits.train.path, "split"), settings.load, cfg.model
    ).model_copy(update={"seed": settings.pipeline.seed})
    run_id = Tracker(workspace).start_run("ddp-digits", "two-nodes", tags={}, params={})
    request = FitRequest(
        family="image",
        card=card,
        cfg=cfg,
        home=home,
        run_id=run_id,
        train_split=splits.train.path,
        val_split=splits.val.path,
        test_split=splits.test.path,
        checkpoints=tmp_path / "checkpoints",
        resume_from=None,
        model_dir=tmp_path / "model",
    )
    write_json(request, tmp_path / "request.json")
    port = str(free_port())
    nodes = []
    for node in (0, 1):
        log = (tmp_path / f"node{node}.log").open("w")
        nodes.append(
            subprocess.Popen(
                [*WORKER, str(tmp_path / "request.json"), str(tmp_path / f"outcome{node}.json")],
                cwd=PROJECT_ROOT,
                env={
                    **_environment(home),
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                    "NODE_RANK": str(node),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        codes = [node.wait(timeout=600) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
            node.wait()
    logs = [(tmp_path / f"node{node}.log").read_text() for node in (0, 1)]
    assert codes == [0, 0], logs
    assert "rank 0 of world_size 2 (node 0" in logs[0]
    assert "rank 1 of world_size 2 (node 1" in logs[1]
    outcome = FitOutcome.model_validate(read_json(tmp_path / "outcome0.json", "t"))
    assert outcome.report is not None and outcome.report.world_size == 2
    assert not (tmp_path / "outcome1.json").exists()
    single = _single_process_accuracy(settings, home, tmp_path)
    assert abs(outcome.report.val_metrics["val_accuracy"] - single) <= TOLERANCE


def _kill_rank_one_mid_training(flow: subprocess.Popen[bytes], last: Path) -> None:
    """Once two epochs are checkpointed, SIGKILL the second rank."""
    deadline = time.monotonic() + 300
    while True:
        assert flow.poll() is None, "the flow ended before a rank could be killed"
        assert time.monotonic() < deadline, "no second checkpoint appeared"
        with contextlib.suppress(Exception):  # not written yet, or being written
            if completed_epochs(last) >= 2:
                break
        time.sleep(0.05)
    ranks = [
        child
        for child in psutil.Process(flow.pid).children(recursive=True)
        if "mlaas.modeling.train_worker" in child.cmdline()
        and child.environ().get("LOCAL_RANK") == "1"
    ]
    assert len(ranks) == 1, "the second rank has already ended: lengthen the training"
    ranks[0].kill()


def test_a_rank_killed_mid_training_fails_the_attempt_and_the_retry_resumes(
    project_settings: Settings, tmp_path: Path
) -> None:
    settings = _ddp_settings(
        project_settings, "ddp-killed", max_epochs=12, early_stopping_patience=12
    )
    home = tmp_path / "home"
    params = write_params(settings, tmp_path)
    log = tmp_path / "flow.log"
    with log.open("w") as sink:
        flow = subprocess.Popen(
            [MLAAS, "--home", str(home), "run", "--params", str(params)],
            cwd=PROJECT_ROOT,
            env=_environment(home),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            last = Workspace(home).pipeline("ddp-killed").checkpoints_dir / "last.ckpt"
            _kill_rank_one_mid_training(flow, last)
            flow.wait(timeout=900)
        finally:
            if flow.poll() is None:
                flow.kill()
    output = log.read_text()
    assert flow.returncode == 0, output[-6000:]
    assert "resuming from the checkpoint after epoch" in output
    training = TrainingResult.model_validate(
        read_json(Workspace(home).pipeline("ddp-killed").training_result, "train")
    )
    assert training.resumed_from_epoch is not None and training.resumed_from_epoch >= 2
    assert training.epochs == 12
    assert not _trainers_of(home), "a rank outlived the run"


def _trainers_of(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            ours = process.environ().get("MLAAS_HOME") == str(home)
            if ours and "mlaas.modeling.train_worker" in (process.info["cmdline"] or []):
                found.append(process)
    return found
