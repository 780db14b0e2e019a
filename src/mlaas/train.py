"""Stage `train`: fit the family's model; the only module that builds a Lightning Trainer.

Networks (CNN, MLP, Transformer, MiniLM head, matrix factorisation) train with Lightning.
Small data sets stay resident in memory (on the accelerator when there is one) as compact
tensors and are sliced into batches there: no per-item DataLoader collation, no host-to-device
copy per step. Every epoch's metrics go to MLflow in one batched request. scikit-learn models
fit their pipeline on the raw rows; their validation score goes to MLflow the same way.

Networks fit in a process of their own (`mlaas.train_worker`): a trainer killed from outside (the
out-of-memory killer, a preempted machine) fails the stage with `TrainingInterrupted` instead of
taking the flow down with it. Every epoch leaves a checkpoint that belongs to one attempt, keyed
by what is trained; training again with the same key resumes from it, into the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pydantic import BaseModel, ConfigDict
from torch import nn

from mlaas.errors import MlaasError, TrainingInterrupted, error_class_named
from mlaas.families import get_family
from mlaas.families.base import Family, ModelCard, NetworkRecipe
from mlaas.lineage import Lineage, directory_hash
from mlaas.models import NetworkModel, PipelineModel, StandardizedOutput, build_network
from mlaas.records import SplitInfo, TrainingResult
from mlaas.settings import LoadSettings, PipelineSettings, TrainSettings
from mlaas.storage import read_json, read_table, write_json
from mlaas.tasks import Task, task_of
from mlaas.tracking import Tracker
from mlaas.workspace import Workspace

_logger = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor]
LAST_CHECKPOINT = "last"
"""The newest epoch's checkpoint, `last.ckpt`, best or not: what a killed attempt resumes from."""


class ResidentBatches:
    """Mini-batches sliced from tensors already in memory; reshuffled, reproducibly, each epoch.

    Each pass over the batches is one epoch, and epoch e's order comes from `seed + e` alone: a
    run resumed at epoch e (`first_epoch=e`) sees the batches the uninterrupted run saw.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        first_epoch: int = 0,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = first_epoch

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        count = len(self.targets)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(count, generator=generator).to(self.inputs.device)
            for start in range(0, count, self.batch_size):
                rows = order[start : start + self.batch_size]
                yield self.inputs[rows], self.targets[rows]
        else:
            for start in range(0, count, self.batch_size):
                stop = start + self.batch_size
                yield self.inputs[start:stop], self.targets[start:stop]


class TaskModule(L.LightningModule):
    """Trains any network on its task's loss (plus the network's own penalty, if it has one)."""

    def __init__(
        self,
        network: nn.Module,
        task: Task,
        learning_rate: float,
        weight_decay: float = 0.0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.task = task
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.augment = augment

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor:
        inputs, targets = batch
        if self.augment is not None:
            inputs = self.augment(inputs)
        raw = self.network(inputs)
        loss = self.task.loss(raw, targets)
        penalty = getattr(self.network, "penalty", None)
        if penalty is not None:
            loss = loss + penalty(inputs)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        # The learning curves' training side: measured on the batch as trained (dropout and
        # augmentation on), so it costs no second forward pass.
        metric = self.task.batch_metric(raw.detach(), targets)
        self.log(self.task.training_metric, metric, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        inputs, targets = batch
        raw = self.network(inputs)
        metrics = {"val_loss": self.task.loss(raw, targets)}
        metrics.update(self.task.validation_metrics(raw, targets))
        self.log_dict(metrics, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )

    # Dropout and augmentation draw from torch's global generators, which Lightning does not
    # checkpoint: carrying them makes a resumed run draw what the uninterrupted one would have.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states is None:
            return
        torch.set_rng_state(states["cpu"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


class EpochMetricsToMlflow(Callback):
    """After each epoch (validation included), send that epoch's metrics in one request.

    Each epoch once: Lightning runs checkpoint callbacks after every other one, so a process
    killed between this request and the checkpoint's write has logged an epoch its resumed
    training runs again. The epochs the run already holds are read when fitting starts and not
    sent twice (the repeat logs the same values: training resumes deterministically).
    """

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.logged_steps: dict[str, set[int]] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.logged_steps = {
            name: {step for step, _ in self.tracker.metric_history(self.run_id, name)}
            for name in self.tracker.run_metrics(self.run_id)
        }

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if epoch not in self.logged_steps.get(name, set())
        }
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)


class EpochLogLine(Callback):
    """After each epoch (validation included), one log line with that epoch's metrics."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _logger.info(
            "%s", epoch_line(trainer.current_epoch, trainer.max_epochs, trainer.callback_metrics)
        )


def epoch_line(epoch: int, max_epochs: int | None, metrics: Mapping[str, Any]) -> str:
    """`epoch 3/22: train_loss=0.1234 val_accuracy=0.9500 val_loss=0.2345` (epochs from 1)."""
    figures = " ".join(f"{name}={float(value):.4f}" for name, value in sorted(metrics.items()))
    return f"epoch {epoch + 1}/{max_epochs}: {figures}"


def build_trainer(cfg: TrainSettings, checkpoints: Path, callbacks: list[Callback]) -> L.Trainer:
    # A terminal gets the progress bar, which shows the epoch's metrics as it runs. Anything else
    # (CI, a log file, `make up`) gets one line per epoch instead: a bar redrawn with carriage
    # returns reads there as nothing for minutes, then one very long line. Not both at once: a
    # log line written under a live bar breaks it in two.
    interactive = sys.stdout.isatty()
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        # "warn": deterministic where the backend can be; GPU kernels without a deterministic
        # version warn instead of failing the run.
        deterministic="warn" if cfg.deterministic else False,
        callbacks=[
            EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience),
            ModelCheckpoint(dirpath=checkpoints, monitor="val_loss", save_top_k=1),
            # Every epoch, after the best one above (so it holds the best's updated state).
            # Not `save_last=True`: Lightning writes that only when a best checkpoint is written.
            ModelCheckpoint(
                dirpath=checkpoints, filename=LAST_CHECKPOINT, enable_version_counter=False
            ),
            *([] if interactive else [EpochLogLine()]),
            *callbacks,
        ],
        enable_progress_bar=interactive,
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=checkpoints.parent,
    )


class FitReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    epochs: int
    best_val_loss: float | None
    val_metrics: dict[str, float]
    fit_seconds: float
    device: str


def completed_epochs(checkpoint: Path) -> int:
    """How many epochs a checkpoint has finished (it stores the 0-based epoch it was saved in)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["epoch"]) + 1


def _fit_network(
    card: ModelCard,
    recipe: NetworkRecipe,
    train: tuple[object, np.ndarray],
    val: tuple[object, np.ndarray],
    cfg: TrainSettings,
    checkpoints: Path,
    callbacks: list[Callback],
    resume_from: Path | None,
) -> tuple[NetworkModel, FitReport]:
    task = task_of(card)
    preprocessor = recipe.new_preprocessor().fit(train[0])
    network = build_network(card, recipe, preprocessor)
    if isinstance(network, StandardizedOutput):
        network.fit_targets(train[1])
    module = TaskModule(network, task, cfg.learning_rate, cfg.weight_decay, recipe.augment)
    if resume_from is None:
        shutil.rmtree(checkpoints, ignore_errors=True)
    first_epoch = completed_epochs(resume_from) if resume_from is not None else 0
    trainer = build_trainer(cfg, checkpoints, callbacks)
    device = trainer.strategy.root_device

    def resident(features: object, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocessor.transform(features).to(device), torch.from_numpy(targets).to(device)

    train_batches = ResidentBatches(
        *resident(*train), cfg.batch_size, shuffle=True, seed=card.seed, first_epoch=first_epoch
    )
    # Validation holds no gradients: bigger batches, fewer steps.
    val_batches = ResidentBatches(*resident(*val), max(cfg.batch_size, 1024), shuffle=False)
    started = time.perf_counter()
    trainer.fit(module, train_batches, val_batches, ckpt_path=resume_from)
    fit_seconds = time.perf_counter() - started
    checkpoint = trainer.checkpoint_callback  # the first one: the best by val_loss
    assert isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor == "val_loss"
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    model = NetworkModel(card, preprocessor, module.network.cpu())
    report = FitReport(
        epochs=trainer.current_epoch,
        best_val_loss=float(checkpoint.best_model_score)
        if checkpoint.best_model_score is not None
        else None,
        val_metrics=_validation_metrics(model, task, val),
        fit_seconds=fit_seconds,
        device=str(device),
    )
    return model, report


def _validation_metrics(
    model: NetworkModel | PipelineModel, task: Task, val: tuple[object, np.ndarray]
) -> dict[str, float]:
    outputs = model.predict(val[0])
    targets = val[1]
    if task.name == "classification":
        return {"val_accuracy": float((outputs.argmax(axis=1) == targets).mean())}
    return {"val_rmse": float(np.sqrt(np.mean((outputs - targets) ** 2)))}


def fit_model(
    family: Family,
    card: ModelCard,
    train_table: pa.Table,
    val_table: pa.Table,
    cfg: TrainSettings,
    checkpoints: Path,
    callbacks: list[Callback] | None = None,
    resume_from: Path | None = None,
) -> tuple[NetworkModel | PipelineModel, FitReport]:
    """Train the card's model on `train_table`, validating (and early-stopping) on `val_table`.

    Networks checkpoint every epoch into `checkpoints`; `resume_from` (a checkpoint there)
    continues that training where it stopped instead of starting afresh.
    """
    task = task_of(card)

    def rows(table: pa.Table) -> tuple[object, np.ndarray]:
        targets = table.column(card.target).to_numpy(zero_copy_only=False)
        return family.features(table, card), task.encode_targets(targets, card)

    L.seed_everything(card.seed, workers=True, verbose=False)
    recipe = family.recipe(card)
    train, val = rows(train_table), rows(val_table)
    if isinstance(recipe, NetworkRecipe):
        return _fit_network(
            card, recipe, train, val, cfg, checkpoints, callbacks or [], resume_from
        )
    started = time.perf_counter()
    pipeline = recipe.pipeline().fit(train[0], train[1])
    model = PipelineModel(card, pipeline)
    return model, FitReport(
        epochs=1,
        best_val_loss=None,
        val_metrics=_validation_metrics(model, task, val),
        fit_seconds=time.perf_counter() - started,
        device="cpu",
    )


class FitRequest(BaseModel):
    """What the training process is asked to do, handed over as one JSON file."""

    model_config = ConfigDict(frozen=True)

    family: str
    card: ModelCard
    cfg: TrainSettings
    home: Path
    run_id: str
    train_split: Path
    val_split: Path
    test_split: Path
    """Never fitted on: only read for what the model must remember of all the data."""
    checkpoints: Path
    resume_from: Path | None
    model_dir: Path


class FitOutcome(BaseModel):
    """What the training process answers: its report, or the error that stopped it."""

    report: FitReport | None = None
    error_type: str | None = None
    error: str | None = None
    user_error: bool = False

    @classmethod
    def of_error(cls, error: Exception) -> FitOutcome:
        """The answer of a training that `error` stopped: its class's name and its message."""
        return cls(
            error_type=type(error).__name__,
            error=str(error),
            user_error=isinstance(error, MlaasError),
        )

    def report_or_raise(self) -> FitReport:
        """The report; or, in the process that asked, the error that stopped the training."""
        if self.report is not None:
            return self.report
        if self.user_error:
            raise error_class_named(self.error_type or "")(self.error)
        raise RuntimeError(
            f"the training process failed: {self.error_type}: {self.error} "
            "(its traceback is printed above)"
        )


def fit_and_save(request: FitRequest) -> FitReport:
    """The training process's work: fit, logging each epoch to the run, and save the model."""
    tracker = Tracker(Workspace(request.home))
    model, report = fit_model(
        get_family(request.family),
        request.card,
        read_table(request.train_split, "split"),
        read_table(request.val_split, "split"),
        request.cfg,
        request.checkpoints,
        [EpochMetricsToMlflow(tracker, request.run_id)],
        resume_from=request.resume_from,
    )
    model = remember_all_data(
        get_family(request.family),
        model,
        [request.train_split, request.val_split, request.test_split],
    )
    shutil.rmtree(request.model_dir, ignore_errors=True)
    model.save(request.model_dir)
    return report


def remember_all_data(
    family: Family, model: NetworkModel | PipelineModel, splits: list[Path]
) -> NetworkModel | PipelineModel:
    """The fitted model, told what its recipe says serving must know of every split."""
    recipe = family.recipe(model.card)
    if not isinstance(model, NetworkModel) or not isinstance(recipe, NetworkRecipe):
        return model
    if recipe.remember_all_data is None:
        return model
    every_row = pa.concat_tables([read_table(path, "split") for path in splits])
    preprocessor = recipe.remember_all_data(
        model.preprocessor, family.features(every_row, model.card)
    )
    return NetworkModel(model.card, preprocessor, model.network)


def fit_in_training_process(request: FitRequest) -> FitReport:
    """Run `fit_and_save` in a child process and wait for it; its death becomes an error here."""
    with tempfile.TemporaryDirectory(prefix="mlaas-train-") as scratch:
        request_path, outcome_path = Path(scratch, "request.json"), Path(scratch, "outcome.json")
        write_json(request, request_path)
        # The child imports the very mlaas this process runs, installed or not.
        package_parent = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "mlaas.train_worker", str(request_path), str(outcome_path)],
            env={**os.environ, "PYTHONPATH": python_path},
        )
        try:
            code = process.wait()
        finally:
            # Cancelled or interrupted here: the trainer must not run on, orphaned.
            if process.poll() is None:
                process.kill()
                process.wait()
        if code < 0:
            raise _interrupted(-code, request)
        outcome = (
            FitOutcome.model_validate(read_json(outcome_path, "train"))
            if outcome_path.is_file()
            else FitOutcome(error_type="Exit", error=f"exit code {code}, no outcome written")
        )
    return outcome.report_or_raise()


def _interrupted(signal_number: int, request: FitRequest) -> TrainingInterrupted:
    name = signal.Signals(signal_number).name if signal_number in signal.valid_signals() else "?"
    last = request.checkpoints / f"{LAST_CHECKPOINT}.ckpt"
    kept = (
        f"the checkpoint after epoch {completed_epochs(last)} is kept, and training again resumes "
        "from it"
        if last.is_file()
        else "no epoch had finished, so training again starts from the beginning"
    )
    hint = " (often the out-of-memory killer: lower train.batch_size)" if name == "SIGKILL" else ""
    return TrainingInterrupted(
        f"the training process was killed by signal {signal_number} ({name}){hint}; {kept}"
    )


class Attempt(BaseModel):
    """One training of one key (what is trained), from its first epoch to its saved model."""

    key: str
    run_id: str


def attempt_key(card: ModelCard, cfg: TrainSettings, splits: SplitInfo, lineage: Lineage) -> str:
    """Identifies what is trained: model card, settings, data and code. Same key, same model."""
    content = {
        "card": card.model_dump(mode="json"),
        "train": cfg.what_is_trained(),
        # The test split too: what the model remembers of all the data is part of it.
        "data": [splits.train.content_hash, splits.val.content_hash, splits.test.content_hash],
        "code": lineage.code_version,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _resumable_checkpoint(record: Path, last: Path, key: str) -> tuple[Attempt, int] | None:
    """The earlier attempt at this key and its finished epochs, when one left a checkpoint."""
    if not (record.is_file() and last.is_file()):
        return None
    attempt = Attempt.model_validate(read_json(record, "train"))
    if attempt.key != key:
        return None
    try:
        return attempt, completed_epochs(last)
    except Exception:  # written halfway when the process died: nothing to resume from
        return None


def run(
    pipeline: PipelineSettings,
    load: LoadSettings,
    cfg: TrainSettings,
    workspace: Workspace,
    splits: SplitInfo,
    lineage: Lineage,
) -> TrainingResult:
    paths = workspace.pipeline(pipeline.name)
    family = get_family(pipeline.family)
    train_table = read_table(splits.train.path, "split")
    card = family.model_card(train_table, load, cfg.model).model_copy(
        update={"seed": pipeline.seed}
    )
    tracker = Tracker(workspace)
    key = attempt_key(card, cfg, splits, lineage)
    record = paths.train_dir / "attempt.json"
    last = paths.checkpoints_dir / f"{LAST_CHECKPOINT}.ckpt"
    earlier = _resumable_checkpoint(record, last, key)
    if earlier is not None and tracker.reopen(earlier[0].run_id):
        run_id, resumed_from_epoch = earlier[0].run_id, earlier[1]
        # A warning, not info: it reaches stderr with no logging set up (`mlaas stage train`) and
        # past the Prefect console's WARNING threshold, as the line printed before did.
        _logger.warning(
            "train: resuming from the checkpoint after epoch %d (MLflow run %s)",
            resumed_from_epoch,
            run_id,
        )
    else:
        run_id, resumed_from_epoch = _start_run(tracker, pipeline, family, card, lineage), None
        shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
        write_json(Attempt(key=key, run_id=run_id), record)
    # scikit-learn fits have no epochs to resume: a process of their own would only add its
    # start (a fresh interpreter importing torch and Lightning, seconds) to a sub-second fit.
    networks = isinstance(family.recipe(card), NetworkRecipe)
    fit = fit_in_training_process if networks else fit_and_save
    try:
        report = fit(
            FitRequest(
                family=family.name,
                card=card,
                cfg=cfg,
                home=workspace.home,
                run_id=run_id,
                train_split=splits.train.path,
                val_split=splits.val.path,
                test_split=splits.test.path,
                checkpoints=paths.checkpoints_dir,
                resume_from=last if resumed_from_epoch is not None else None,
                model_dir=paths.model_dir,
            )
        )
        summary = {"epochs": report.epochs, "fit_seconds": report.fit_seconds}
        if report.best_val_loss is not None:
            summary["best_val_loss"] = report.best_val_loss
        tracker.log_metrics(run_id, {**summary, **report.val_metrics})
        result = TrainingResult(
            run_id=run_id,
            model_dir=paths.model_dir,
            model_hash=directory_hash(paths.model_dir),
            epochs=report.epochs,
            best_val_loss=report.best_val_loss,
            fit_seconds=round(report.fit_seconds, 3),
            device=report.device,
            resumed_from_epoch=resumed_from_epoch,
        )
    except BaseException:
        tracker.finish(run_id, succeeded=False)
        raise
    tracker.finish(run_id)
    # The attempt is over: nothing to resume any more, and the model folder is what it made.
    record.unlink()
    shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
    write_json(result, paths.training_result)
    return result


def _start_run(
    tracker: Tracker, pipeline: PipelineSettings, family: Family, card: ModelCard, lineage: Lineage
) -> str:
    return tracker.start_run(
        experiment=pipeline.name,
        run_name=f"{pipeline.name}-{card.model.name}",
        tags={
            "mlaas.pipeline": pipeline.name,
            "mlaas.family": family.name,
            "mlaas.model": card.model.name,
            "mlaas.dataset": card.dataset,
            **lineage.tags(),
        },
        params=lineage.params,
    )
