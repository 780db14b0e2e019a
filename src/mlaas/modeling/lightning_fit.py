"""The Lightning side of fitting a network: resident batches, the LightningModule, the Trainer and
its callbacks. The only module that builds a Lightning Trainer.

Batches stay resident: a split's rows become tensors once and are sliced into batches there, no
per-item DataLoader collation, no host-to-device copy per step. Every epoch's metrics go to
MLflow in one batched request; every epoch leaves a checkpoint (`last.ckpt`) to resume from.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from mlaas.core.settings import TrainSettings
from mlaas.core.tasks import Task
from mlaas.modeling.checkpoints import LAST_CHECKPOINT
from mlaas.stores.tracking import Tracker

_logger = logging.getLogger(__name__)
Batch = tuple[torch.Tensor, torch.Tensor]


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0 and 1 outside distributed training)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResidentBatches:
    """Mini-batches sliced from tensors already in memory; reshuffled, reproducibly, each epoch.

    Each pass over the batches is one epoch, and epoch e's order comes from `seed + e` alone: a
    run resumed at epoch e (`first_epoch=e`) sees the batches the uninterrupted run saw. Under
    DDP each rank takes every world-size-th row of that order (the order padded with its first
    rows to a multiple of the world size, as torch's DistributedSampler does) in batches of
    `batch_size / world size`: `train.batch_size` stays the batch one optimizer step averages
    over, so an epoch has the steps it has on one process and DDP trains what one process
    would; and every rank takes the same number of batches, so no collective waits on a rank
    that has stopped. Rows in a fixed order (validation) are not shared out: every rank scores
    them all, and reports the same figures.
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

    def _world(self) -> int:
        return _rank_and_world()[1] if self.shuffle else 1

    def _rows_per_rank(self) -> int:
        return math.ceil(len(self.targets) / self._world())

    def _rank_batch_size(self) -> int:
        return max(1, self.batch_size // self._world())

    def __len__(self) -> int:
        return math.ceil(self._rows_per_rank() / self._rank_batch_size())

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        count = len(self.targets)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(count, generator=generator)
            rank, world = _rank_and_world()
            if world > 1:
                padded = torch.cat([order, order[: self._rows_per_rank() * world - count]])
                order = padded[rank::world]
            order = order.to(self.inputs.device)
            count, size = len(order), self._rank_batch_size()
            for start in range(0, count, size):
                rows = order[start : start + size]
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
        shared = (
            self.trainer.world_size > 1
        )  # each rank saw its own rows: their mean is the epoch's
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=shared)
        # The learning curves' training side: measured on the batch as trained (dropout and
        # augmentation on), so it costs no second forward pass.
        metric = self.task.batch_metric(raw.detach(), targets)
        self.log(self.task.training_metric, metric, on_step=False, on_epoch=True, sync_dist=shared)
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
        if not trainer.is_global_zero:  # under DDP, rank 0 alone logs (the ranks agree)
            return
        epoch = trainer.current_epoch
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if epoch not in self.logged_steps.get(name, set())
        }
        self.tracker.log_metrics(self.run_id, metrics, step=epoch)


class EpochLogLine(Callback):
    """After each epoch (validation included), one log line with that epoch's metrics; and,
    under DDP, one line per rank as it starts."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            _logger.info(
                "rank %d of world_size %d (node %d, local rank %d)",
                trainer.global_rank,
                trainer.world_size,
                trainer.node_rank,
                trainer.local_rank,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
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
    strategy: str | DDPStrategy = "auto"
    if cfg.strategy == "ddp":
        # gloo on CPUs, NCCL on GPUs (Lightning's choice); a collective that waits longer than
        # the timeout fails, and the training process's death fails the task (it retries).
        strategy = DDPStrategy(timeout=timedelta(seconds=cfg.ddp_timeout_s))
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=strategy,
        num_nodes=cfg.num_nodes,
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
            *([EpochLogLine()] if not interactive or cfg.strategy == "ddp" else []),
            *callbacks,
        ],
        enable_progress_bar=interactive,
        logger=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=checkpoints.parent,
    )
