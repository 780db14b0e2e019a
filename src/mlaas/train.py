"""Stage `train`: fit the family's model; the only module that builds a Lightning Trainer.

Networks (CNN, MLP, Transformer, MiniLM head, matrix factorisation) train with Lightning.
Small data sets stay resident in memory (on the accelerator when there is one) as compact
tensors and are sliced into batches there: no per-item DataLoader collation, no host-to-device
copy per step. Every epoch's metrics go to MLflow in one batched request. scikit-learn models
fit their pipeline on the raw rows; their validation score goes to MLflow the same way.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn

from mlaas.families import Family, get_family
from mlaas.families.base import ModelCard, NetworkRecipe
from mlaas.lineage import Lineage, directory_hash
from mlaas.models import NetworkModel, PipelineModel, StandardizedOutput, build_network
from mlaas.records import SplitInfo, TrainingResult
from mlaas.settings import LoadSettings, PipelineSettings, TrainSettings
from mlaas.storage import read_table, write_json
from mlaas.tasks import Task, task_of
from mlaas.tracking import Tracker
from mlaas.workspace import Workspace

Batch = tuple[torch.Tensor, torch.Tensor]


class ResidentBatches:
    """Mini-batches sliced from tensors already in memory; reshuffled, reproducibly, each epoch."""

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
    ) -> None:
        self.inputs = inputs
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        count = len(self.targets)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator).to(self.inputs.device)
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
        loss = self.task.loss(self.network(inputs), targets)
        penalty = getattr(self.network, "penalty", None)
        if penalty is not None:
            loss = loss + penalty(inputs)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
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


class EpochMetricsToMlflow(Callback):
    """After each epoch (validation included), send that epoch's metrics in one request."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        self.tracker.log_metrics(self.run_id, metrics, step=trainer.current_epoch)


def build_trainer(cfg: TrainSettings, checkpoints: Path, callbacks: list[Callback]) -> L.Trainer:
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
            *callbacks,
        ],
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=checkpoints.parent,
    )


@dataclass(frozen=True)
class FitReport:
    epochs: int
    best_val_loss: float | None
    val_metrics: dict[str, float]
    fit_seconds: float
    device: str


def _fit_network(
    card: ModelCard,
    recipe: NetworkRecipe,
    train: tuple[object, np.ndarray],
    val: tuple[object, np.ndarray],
    cfg: TrainSettings,
    checkpoints: Path,
    callbacks: list[Callback],
) -> tuple[NetworkModel, FitReport]:
    task = task_of(card)
    preprocessor = recipe.new_preprocessor().fit(train[0])
    network = build_network(card, recipe, preprocessor)
    if isinstance(network, StandardizedOutput):
        network.fit_targets(train[1])
    module = TaskModule(network, task, cfg.learning_rate, cfg.weight_decay, recipe.augment)
    shutil.rmtree(checkpoints, ignore_errors=True)
    trainer = build_trainer(cfg, checkpoints, callbacks)
    device = trainer.strategy.root_device

    def resident(features: object, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return preprocessor.transform(features).to(device), torch.from_numpy(targets).to(device)

    train_batches = ResidentBatches(*resident(*train), cfg.batch_size, shuffle=True, seed=card.seed)
    # Validation holds no gradients: bigger batches, fewer steps.
    val_batches = ResidentBatches(*resident(*val), max(cfg.batch_size, 1024), shuffle=False)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches)
    fit_seconds = time.perf_counter() - started
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)
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
) -> tuple[NetworkModel | PipelineModel, FitReport]:
    """Train the card's model on `train_table`, validating (and early-stopping) on `val_table`."""
    task = task_of(card)

    def rows(table: pa.Table) -> tuple[object, np.ndarray]:
        targets = table.column(card.target).to_numpy(zero_copy_only=False)
        return family.features(table, card), task.encode_targets(targets, card)

    L.seed_everything(card.seed, workers=True, verbose=False)
    recipe = family.recipe(card)
    train, val = rows(train_table), rows(val_table)
    if isinstance(recipe, NetworkRecipe):
        return _fit_network(card, recipe, train, val, cfg, checkpoints, callbacks or [])
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
    run_id = tracker.start_run(
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
    try:
        model, report = fit_model(
            family,
            card,
            train_table,
            read_table(splits.val.path, "split"),
            cfg,
            paths.checkpoints_dir,
            [EpochMetricsToMlflow(tracker, run_id)],
        )
        shutil.rmtree(paths.model_dir, ignore_errors=True)
        model.save(paths.model_dir)
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
        )
    except BaseException:
        tracker.finish(run_id, succeeded=False)
        raise
    tracker.finish(run_id)
    write_json(result, paths.training_result)
    return result
