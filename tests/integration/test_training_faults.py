"""A trainer killed mid-epoch resumes from its last checkpoint on a Prefect retry, and ends with
the model an uninterrupted training makes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from mlflow.tracking import MlflowClient
from tests.conftest import PROJECT_ROOT, shrink, write_params

from mlaas.core.model_settings import CnnSettings
from mlaas.core.records import SplitInfo, TrainingResult
from mlaas.core.settings import LoadSettings, Settings, SplitSettings, TrainSettings
from mlaas.core.tasks import task_of
from mlaas.families.image import ImageFamily
from mlaas.modeling.checkpoints import completed_epochs
from mlaas.modeling.fitting import fit_model
from mlaas.modeling.lightning_fit import EpochMetricsToMlflow
from mlaas.modeling.models import NetworkModel, PipelineModel, load_model
from mlaas.stages.split import split_table
from mlaas.stores.files import read_json, read_table
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace

family = ImageFamily()
# `mlaas run`, then the train task's runs and state history from the same (ephemeral) Prefect API.
RUN_THEN_READ_TASK_RUNS = """
import json, sys
from mlaas.cli.main import main
code = main(sys.argv[1:])
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import TaskRunSort
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=100)
    train = [
        {"run_count": run.run_count, "state": run.state_name,
         "history": [state.name for state in client.read_task_run_states(run.id)]}
        for run in runs if run.name.startswith("train-")
    ]
print("train task runs:", json.dumps(train))
sys.exit(code)
"""


def test_a_resumed_fit_makes_the_same_network_as_an_uninterrupted_one(tmp_path: Path) -> None:
    load = LoadSettings(source="digits")
    splits = split_table(family.load(load), "label", SplitSettings(), seed=0)
    model = CnnSettings(conv_channels=[8], hidden_units=32, dropout=0.2, augment_max_shift=1)
    card = family.model_card(splits.train, load, model).model_copy(update={"seed": 3})
    cfg = TrainSettings(
        model=model, max_epochs=4, accelerator="cpu", devices=1, early_stopping_patience=100
    )

    tracker = Tracker(Workspace(tmp_path / "home"))
    run_id = tracker.start_run("resumed", "resumed", {}, {})

    def fit(
        checkpoints: Path, epochs: int, resume_from: Path | None = None, logged: bool = False
    ) -> torch.nn.Module:
        settings = cfg.model_copy(update={"max_epochs": epochs})
        callbacks = [EpochMetricsToMlflow(tracker, run_id)] if logged else []
        trained, _ = fit_model(
            family, card, splits.train, splits.val, settings, checkpoints, callbacks, resume_from
        )
        return trained.network  # type: ignore[union-attr]

    uninterrupted = fit(tmp_path / "uninterrupted", 4)
    fit(tmp_path / "stopped", 2, logged=True)
    last = tmp_path / "stopped" / "last.ckpt"
    assert completed_epochs(last) == 2
    # Killed between epoch 3's metrics reaching MLflow and its checkpoint's write (checkpoints
    # are Lightning's last callback): the run holds an epoch the resumed training runs again.
    tracker.log_metrics(run_id, {"val_loss": 0.5}, step=2)
    resumed = fit(tmp_path / "stopped", 4, resume_from=last, logged=True)
    # Same batches, same dropout and augmentation draws: the very same weights.
    for (name, expected), (_, actual) in zip(
        uninterrupted.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(expected, actual), name
    # Each epoch in the run once; the epochs the first attempt never reached, from the second.
    for name in ("val_loss", "val_accuracy", "train_loss"):
        steps = [step for step, _ in tracker.metric_history(run_id, name)]
        assert steps == [0, 1, 2, 3], name


def _flow_environment(home: Path) -> dict[str, str]:
    # The flow gets its own Prefect (ephemeral API, database under `home`), not the session's.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    return {**inherited, **Workspace(home).environment(), "PREFECT_LOGGING_LEVEL": "INFO"}


def _kill_the_trainer_mid_epoch(flow: subprocess.Popen[bytes], last: Path) -> None:
    """Once two epochs are checkpointed, SIGKILL the training process half an epoch later."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 300
    while len(seen) < 2:
        assert flow.poll() is None, "the flow ended before its trainer could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        with contextlib.suppress(Exception):  # not written yet, or being written
            seen.setdefault(completed_epochs(last), time.monotonic())
        time.sleep(0.02)
    (first, at_first), (second, at_second) = sorted(seen.items())
    time.sleep((at_second - at_first) / (second - first) / 2)
    trainers = [
        child
        for child in psutil.Process(flow.pid).children(recursive=True)
        if "mlaas.modeling.train_worker" in child.cmdline()
    ]
    assert len(trainers) == 1, "the training process has already ended: lengthen the training"
    trainers[0].kill()


def _test_accuracy(model: NetworkModel | PipelineModel, splits: SplitInfo) -> float:
    table = read_table(splits.test.path, "split")
    labels = task_of(model.card).encode_targets(table.column("label").to_numpy(), model.card)
    return float((model.predict(family.features(table, model.card)).argmax(1) == labels).mean())


@pytest.mark.slow
def test_a_killed_trainer_resumes_from_its_checkpoint_on_a_prefect_retry(
    project_settings: Settings, tmp_path: Path
) -> None:
    settings = shrink(
        project_settings, "killed-digits", train={"max_epochs": 8, "early_stopping_patience": 8}
    )
    home = tmp_path / "home"
    paths = Workspace(home).pipeline("killed-digits")
    params = write_params(settings, tmp_path)
    command = ["--home", str(home), "run", "--params", str(params)]
    log = tmp_path / "flow.log"
    with log.open("w") as sink:
        flow = subprocess.Popen(
            [sys.executable, "-c", RUN_THEN_READ_TASK_RUNS, *command],
            cwd=PROJECT_ROOT,
            env=_flow_environment(home),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            _kill_the_trainer_mid_epoch(flow, paths.checkpoints_dir / "last.ckpt")
            flow.wait(timeout=600)
        finally:
            if flow.poll() is None:
                flow.kill()
    output = log.read_text()
    assert flow.returncode == 0, output[-5000:]
    assert "the training process was killed by signal 9 (SIGKILL)" in output
    assert "resuming from the checkpoint after epoch" in output

    # The retry is Prefect's: one train task run, run twice, through AwaitingRetry.
    (train_run,) = json.loads(output.split("train task runs:")[-1].splitlines()[0])
    assert train_run["run_count"] == 2 and train_run["state"] == "Completed"
    assert train_run["history"][-3:] == ["AwaitingRetry", "Retrying", "Completed"]

    training = TrainingResult.model_validate(read_json(paths.training_result, "train"))
    assert training.resumed_from_epoch is not None and training.resumed_from_epoch >= 2
    assert training.epochs == 8

    # One MLflow run holds the whole training: each epoch logged once, none twice.
    client = MlflowClient(Workspace(home).tracking_uri)
    experiment = client.get_experiment_by_name("killed-digits")
    assert experiment is not None
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_id == training.run_id and mlflow_run.info.status == "FINISHED"
    steps = [metric.step for metric in client.get_metric_history(training.run_id, "val_loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 7

    # The same quality as a training that was never killed, on the same splits.
    splits = SplitInfo.model_validate(read_json(paths.splits_record, "split"))
    resumed = load_model(training.model_dir)
    uninterrupted, _ = fit_model(
        family,
        resumed.card,
        read_table(splits.train.path, "split"),
        read_table(splits.val.path, "split"),
        settings.train,
        tmp_path / "uninterrupted",
    )
    resumed_accuracy = _test_accuracy(resumed, splits)
    uninterrupted_accuracy = _test_accuracy(uninterrupted, splits)
    print(
        f"killed in epoch {training.resumed_from_epoch + 1}, resumed after epoch "
        f"{training.resumed_from_epoch}: test accuracy {resumed_accuracy:.4f}; "
        f"uninterrupted: {uninterrupted_accuracy:.4f}"
    )
    assert resumed_accuracy >= 0.85
    assert abs(resumed_accuracy - uninterrupted_accuracy) <= 0.03
