"""Stage `train`: fit the family's network with Lightning; the only module that builds a Trainer.

Small data sets stay resident in memory (on the accelerator when there is one) as compact
tensors and are sliced into batches there: no per-item DataLoader collation, no host-to-device
copy per step. Every epoch's metrics go to MLflow in one batched request.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import pyarrow as pa
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch import nn

from mlaas.families import get_family
from mlaas.families.base import class_indices
from mlaas.lineage import Lineage, directory_hash
from mlaas.predictor import save_model
from mlaas.records import SplitInfo, TrainingResult
from mlaas.settings import LoadSettings, PipelineSettings, TrainSettings
from mlaas.storage import read_table, write_json
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


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of any network that maps raw instances to class logits."""

    def __init__(
        self,
        network: nn.Module,
        learning_rate: float,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.learning_rate = learning_rate
        self.augment = augment

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)

    def training_step(self, batch: Batch, batch_index: int) -> torch.Tensor:
        inputs, targets = batch
        if self.augment is not None:
            inputs = self.augment(inputs)
        loss = nn.functional.cross_entropy(self.network(inputs), targets)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_index: int) -> None:
        inputs, targets = batch
        logits = self.network(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        self.log_dict({"val_loss": loss, "val_accuracy": accuracy}, on_epoch=True, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.network.parameters(), lr=self.learning_rate)


class EpochMetricsToMlflow(Callback):
    """After each epoch (validation included), send that epoch's metrics in one request."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        self.tracker.log_metrics(self.run_id, metrics, step=trainer.current_epoch)


def build_trainer(
    cfg: TrainSettings, checkpoints_dir: Path, callbacks: list[Callback]
) -> L.Trainer:
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        # "warn": deterministic where the backend can be; GPU kernels without a deterministic
        # version warn instead of failing the run.
        deterministic="warn" if cfg.deterministic else False,
        callbacks=[
            EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience),
            ModelCheckpoint(dirpath=checkpoints_dir, monitor="val_loss", save_top_k=1),
            *callbacks,
        ],
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=checkpoints_dir.parent,
    )


def fit(
    module: ClassifierModule,
    trainer: L.Trainer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: TrainSettings,
    seed: int,
) -> float:
    """Train, then load the best checkpoint's weights into `module`; returns the best val loss."""
    device = trainer.strategy.root_device
    train_batches = ResidentBatches(
        train[0].to(device), train[1].to(device), cfg.batch_size, shuffle=True, seed=seed
    )
    # Validation has no gradients to hold: bigger batches, fewer steps.
    val_batches = ResidentBatches(
        val[0].to(device), val[1].to(device), max(cfg.batch_size, 1024), shuffle=False
    )
    trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches)
    checkpoint = trainer.checkpoint_callback
    assert isinstance(checkpoint, ModelCheckpoint)
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    return float(checkpoint.best_model_score or float("nan"))


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
    card = family.model_card(train_table, load, cfg.model)

    def tensors(table: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
        labels = table.column(family.target_column).to_numpy(zero_copy_only=False)
        return family.inputs(table, card), class_indices(labels, card.classes)

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
        L.seed_everything(pipeline.seed, workers=True, verbose=False)
        shutil.rmtree(paths.checkpoints_dir, ignore_errors=True)
        module = ClassifierModule(
            family.build_network(card), cfg.learning_rate, family.augmentation(card)
        )
        trainer = build_trainer(cfg, paths.checkpoints_dir, [EpochMetricsToMlflow(tracker, run_id)])
        started = time.perf_counter()
        best_val_loss = fit(
            module,
            trainer,
            tensors(train_table),
            tensors(read_table(splits.val.path, "split")),
            cfg,
            pipeline.seed,
        )
        fit_seconds = time.perf_counter() - started
        shutil.rmtree(paths.model_dir, ignore_errors=True)
        save_model(module.network, card, paths.model_dir)
        result = TrainingResult(
            run_id=run_id,
            model_dir=paths.model_dir,
            model_hash=directory_hash(paths.model_dir),
            epochs=trainer.current_epoch,
            best_val_loss=best_val_loss,
            fit_seconds=round(fit_seconds, 3),
            device=str(trainer.strategy.root_device),
        )
        tracker.log_metrics(
            run_id,
            {"best_val_loss": best_val_loss, "epochs": result.epochs, "fit_seconds": fit_seconds},
        )
    except BaseException:
        tracker.finish(run_id, succeeded=False)
        raise
    tracker.finish(run_id)
    write_json(result, paths.training_result)
    return result
