"""Benchmarks 1 and 2: the training loop's tax and the data path.

1. mlaas's training (TaskModule + the Trainer `lightning_fit.build_trainer` makes, with its early
   stopping, checkpointing and per-epoch MLflow logging) against a raw PyTorch loop doing the
   same work: same network, data, batches, optimiser, a validation pass and a kept best state per
   epoch. Time per epoch, A/B interleaved.
2. The data feeding: `ResidentBatches` (tensors resident, uint8, sliced per batch) against
   `DataLoader(TensorDataset)`, each delivering one epoch of batches to the device, normalised.
"""

from __future__ import annotations

import copy
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import pyarrow as pa
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from bench.common import Comparison, interleaved, save, timed
from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import CnnSettings
from mlaas.core.settings import LoadSettings, SplitSettings, TrainSettings
from mlaas.core.tasks import task_of
from mlaas.families.image import ImageFamily
from mlaas.modeling.lightning_fit import (
    EpochMetricsToMlflow,
    ResidentBatches,
    TaskModule,
    build_trainer,
)
from mlaas.stages.split import split_table
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace


def _data(
    quick: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, ModelCard]:
    family = ImageFamily()
    load = LoadSettings(source="digits" if quick else "mnist")
    splits = split_table(family.load(load), "label", SplitSettings(), seed=0)
    model = CnnSettings(conv_channels=[16] if quick else [32, 64], augment_max_shift=0)
    card = family.model_card(splits.train, load, model)
    pixels = family.recipe(card).new_preprocessor()

    def tensors(table: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
        targets = task_of(card).encode_targets(table.column("label").to_numpy(), card)
        return pixels.transform(family.features(table, card)), torch.from_numpy(targets)

    return (*tensors(splits.train), *tensors(splits.val), card)


class EpochTimer(Callback):
    """Wall time of each training epoch, its validation, checkpoint and logging included."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self.started)


def training_tax(quick: bool) -> Comparison:
    train_x, train_y, val_x, val_y, card = _data(quick)
    family = ImageFamily()
    # Per-epoch times after each run's first epoch: the steady state a 20-epoch run lives in.
    epochs, rounds, batch = (3, 2, 64) if quick else (4, 5, 64)
    cfg = TrainSettings(
        model=card.model,
        max_epochs=epochs,
        batch_size=batch,
        early_stopping_patience=100,
        accelerator="auto",
    )
    task = task_of(card)
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    workspace = Workspace(scratch / "home")
    tracker = Tracker(workspace)
    run_id = tracker.start_run("bench", "training-tax", {}, {})

    def fresh_network() -> torch.nn.Module:
        torch.manual_seed(0)
        return family.recipe(card).network(None)

    def raw() -> float:
        network = fresh_network()
        optimiser = torch.optim.Adam(network.parameters(), lr=cfg.learning_rate)
        batches = ResidentBatches(train_x, train_y, batch, shuffle=True, seed=0)

        times: list[float] = []

        def loop() -> None:
            best, best_state = float("inf"), None
            for _ in range(epochs):
                started = time.perf_counter()
                network.train()
                for inputs, targets in batches:
                    loss = task.loss(network(inputs), targets)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                network.eval()
                with torch.no_grad():
                    val_loss = float(task.loss(network(val_x), val_y))
                if val_loss < best:  # what ModelCheckpoint keeps, without the file
                    best, best_state = val_loss, copy.deepcopy(network.state_dict())
                times.append(time.perf_counter() - started)
            if best_state is None:
                raise RuntimeError("the raw loop kept no best state: no epoch ran")

        loop()
        return statistics.median(times[1:])

    def mlaas() -> float:
        shutil.rmtree(scratch / "checkpoints", ignore_errors=True)
        module = TaskModule(fresh_network(), task, cfg.learning_rate)
        timer = EpochTimer()
        callbacks = [EpochMetricsToMlflow(tracker, run_id), timer]  # the timer's end is last
        trainer = build_trainer(cfg, scratch / "checkpoints", callbacks)
        trainer_batches = ResidentBatches(train_x, train_y, batch, shuffle=True, seed=0)
        val_batches = ResidentBatches(val_x, val_y, 1024, shuffle=False)
        trainer.fit(module, trainer_batches, val_batches)
        return statistics.median(timer.times[1:])

    raw_times, mlaas_times = interleaved(raw, mlaas, rounds)
    comparison = Comparison(
        name="training_tax",
        a_label="raw PyTorch loop",
        b_label="mlaas (Lightning Trainer, checkpoint, early stopping, MLflow per epoch)",
        unit="s/epoch",
        a_samples=raw_times,
        b_samples=mlaas_times,
        target="≤ 1.05× raw per epoch on CPU",
        met=None,
        extra={"batch_size": batch, "train_rows": len(train_y), "epochs_per_round": epochs},
    )
    comparison.met = comparison.ratio <= 1.05
    save(comparison, quick)
    return comparison


def data_path(quick: bool) -> Comparison:
    train_x, train_y, *_ = _data(quick)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = 512
    rounds = 3 if quick else 7

    def consume(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        # What a training step needs first: the batch on the device, as normalised floats.
        normalised = inputs.to(device, non_blocking=True).float() / 255.0
        targets.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        del normalised

    def consume_all(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for inputs, targets in batches:
            consume(inputs, targets)

    def loader() -> float:
        dataset = TensorDataset(train_x, train_y)
        batches = DataLoader(dataset, batch_size=batch, shuffle=True)
        return timed(lambda: consume_all(batches))

    resident_x, resident_y = train_x.to(device), train_y.to(device)

    def resident() -> float:
        batches = ResidentBatches(resident_x, resident_y, batch, shuffle=True, seed=0)
        return timed(lambda: consume_all(batches))

    loader_times, resident_times = interleaved(loader, resident, rounds)
    comparison = Comparison(
        name="data_path",
        a_label="DataLoader(TensorDataset)",
        b_label="mlaas ResidentBatches (uint8, resident, sliced)",
        unit="s/epoch of batches",
        a_samples=loader_times,
        b_samples=resident_times,
        target="≥ 3× faster than DataLoader on GPU",
        met=None,
        extra={"device": str(device), "batch_size": batch, "rows": len(train_y)},
    )
    speedup = 1.0 / comparison.ratio
    comparison.extra["speedup"] = speedup
    comparison.met = speedup >= 3.0 if device.type == "cuda" else None
    save(comparison, quick)
    return comparison


def ddp_ranks(quick: bool) -> Comparison:
    """The same training through the product's training process with `strategy: ddp` over two
    CPU ranks against one process: the fit's own seconds (`FitReport.fit_seconds`, from the
    start of `trainer.fit` to its end, each rank's start and the process group's set-up
    included), rounds interleaved."""
    from mlaas.core.records import SplitInfo
    from mlaas.core.settings import load_settings, parse_settings
    from mlaas.modeling.fitting import FitRequest, fit_in_training_process
    from mlaas.stages.table import run_stage
    from mlaas.stores.files import read_table

    folder = Path(tempfile.mkdtemp(prefix="mlaas-bench-ddp-"))
    params = load_settings(Path(__file__).resolve().parents[1] / "params.yaml").as_params()
    params["pipeline"]["name"] = "bench-ddp"
    params["load"] = {"source": "digits" if quick else "mnist"}
    params["validate"]["min_rows"] = 100
    settings = parse_settings(params)
    home = Workspace(folder / "home")
    for stage in ("load", "validate", "split"):
        run_stage(stage, settings, home)
    splits = SplitInfo.model_validate_json(home.pipeline("bench-ddp").splits_record.read_text())
    train_table = read_table(splits.train.path, "split")
    card = ImageFamily().model_card(train_table, settings.load, settings.train.model)
    tracker = Tracker(home)
    epochs = 1 if quick else 3

    def fit(ranks: int) -> float:
        cfg = settings.train.model_copy(
            update={
                "max_epochs": epochs,
                "accelerator": "cpu",
                "devices": ranks,
                "strategy": "ddp" if ranks > 1 else "auto",
            }
        )
        scratch = Path(tempfile.mkdtemp(dir=folder))
        report = fit_in_training_process(
            FitRequest(
                family="image",
                card=card,
                cfg=cfg,
                home=home.home,
                run_id=tracker.start_run("bench-ddp", f"ranks-{ranks}", tags={}, params={}),
                train_split=splits.train.path,
                val_split=splits.val.path,
                test_split=splits.test.path,
                checkpoints=scratch / "checkpoints",
                resume_from=None,
                model_dir=scratch / "model",
            )
        )
        shutil.rmtree(scratch, ignore_errors=True)
        return report.fit_seconds

    one, two = interleaved(lambda: fit(1), lambda: fit(2), rounds=1 if quick else 3, warmup=0)
    comparison = Comparison(
        name="ddp_ranks",
        a_label="1 process",
        b_label="train.strategy: ddp, 2 CPU ranks (gloo)",
        unit=f"s (fit of {epochs} epochs, {'digits' if quick else 'MNIST-5k'} CNN)",
        a_samples=one,
        b_samples=two,
        target="report (2 cores: each rank gets one core's torch threads)",
        met=None,
    )
    save(comparison, quick)
    return comparison
