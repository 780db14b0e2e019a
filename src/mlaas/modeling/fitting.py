"""Fitting a model: a network through Lightning, a scikit-learn pipeline directly, and the
training process that a killed trainer takes down instead of the flow.

`fit_in_training_process` hands a `FitRequest` to `python -m mlaas.modeling.train_worker` and
reads back its `FitOutcome`: the request/outcome boundary where other executors plug in.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict

from mlaas.core.errors import MlaasError, TrainingInterrupted, TrialWasPruned, error_class_named
from mlaas.core.model_card import ModelCard
from mlaas.core.settings import TrainSettings
from mlaas.core.tasks import Task, task_of
from mlaas.families import get_family
from mlaas.families.base import Family, NetworkRecipe
from mlaas.modeling.checkpoints import LAST_CHECKPOINT, completed_epochs
from mlaas.modeling.models import NetworkModel, PipelineModel, StandardizedOutput, build_network
from mlaas.modeling.training_process import TrainingProcess
from mlaas.modeling.trial_link import TrialLink, pruning_callback
from mlaas.stores.files import read_json, read_table
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import LOCK_URI_VARIABLE, Workspace

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

# Lightning (a third of what a run's process imports) is imported only where a network is fitted:
# a scikit-learn pipeline trains in the flow's own process, which then never loads it.


class NotRankZero(Exception):
    """Raised in a DDP rank other than 0 once training ends: rank 0 alone reports and saves."""


class FitReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    epochs: int
    best_val_loss: float | None
    val_metrics: dict[str, float]
    fit_seconds: float
    device: str
    world_size: int = 1
    """The DDP ranks that trained it (1: one process)."""


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
    from lightning.pytorch.callbacks import ModelCheckpoint

    from mlaas.modeling.lightning_fit import ResidentBatches, TaskModule, build_trainer

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
    if not trainer.is_global_zero:
        raise NotRankZero  # its share is in rank 0's model
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
        world_size=trainer.world_size,
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


def _seed_everything(seed: int, lightning: bool) -> None:
    """Python's, NumPy's and torch's generators seeded; for a network through Lightning, which
    also seeds the data loaders' workers."""
    if lightning:
        import lightning as L

        L.seed_everything(seed, workers=True, verbose=False)
        return
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

    recipe = family.recipe(card)
    _seed_everything(card.seed, lightning=isinstance(recipe, NetworkRecipe))
    train, val = rows(train_table), rows(val_table)
    if isinstance(recipe, NetworkRecipe):
        return _fit_network(
            card, recipe, train, val, cfg, checkpoints, callbacks or [], resume_from
        )
    started = time.perf_counter()
    pipeline = recipe.pipeline().fit(train[0], train[1])
    model = PipelineModel(card, pipeline, recipe.compile_preprocess)
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
    store_uri: str | None = None
    """The workspace's tracking store when it is not the SQLite file under `home`."""
    run_id: str
    train_split: Path
    val_split: Path
    test_split: Path
    """Never fitted on: only read for what the model must remember of all the data."""
    checkpoints: Path
    resume_from: Path | None
    model_dir: Path
    trial: TrialLink | None = None
    """The search trial this fit is, whose pruner it reports each epoch to."""
    threads: int | None = None
    """torch's CPU threads (None: its default, one per core): trials run side by side share the
    cores instead of each taking them all."""


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
    if request.threads is not None:
        torch.set_num_threads(request.threads)
    family = get_family(request.family)
    callbacks: list[Callback] = []
    workspace = Workspace(request.home, request.store_uri, os.environ.get(LOCK_URI_VARIABLE))
    if isinstance(family.recipe(request.card), NetworkRecipe):
        from mlaas.modeling.lightning_fit import EpochMetricsToMlflow

        callbacks.append(EpochMetricsToMlflow(Tracker(workspace), request.run_id))
        if request.trial is not None:
            callbacks.append(pruning_callback(request.trial, workspace))
    try:
        model, report = fit_model(
            family,
            request.card,
            read_table(request.train_split, "split"),
            read_table(request.val_split, "split"),
            request.cfg,
            request.checkpoints,
            callbacks,
            resume_from=request.resume_from,
        )
    except Exception as error:
        if request.trial is not None:
            import optuna  # imported only for a search's trial

            if isinstance(error, optuna.TrialPruned):
                raise TrialWasPruned(str(error)) from None
        raise
    model = remember_all_data(
        family,
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


def trains_in_own_process(family: Family, card: ModelCard) -> bool:
    """Whether the model trains in a training process of its own (networks: a killed trainer
    resumes from its epochs' checkpoints). scikit-learn fits have no epochs to resume: a process
    of their own would only add its start (a fresh interpreter importing torch and Lightning,
    seconds) to a sub-second fit."""
    return isinstance(family.recipe(card), NetworkRecipe)


def fit_in_training_process(
    request: FitRequest, started: TrainingProcess | None = None
) -> FitReport:
    """Run `fit_and_save` in a training process and wait for it; its death becomes an error
    here. `started`: one started ahead of the request (`TrainingProcess`), used while it still
    waits; else (used, or dead) a fresh one."""
    process = started if started is not None and started.waiting() else TrainingProcess.start()
    try:
        code = process.run(request)
        if code < 0:
            raise _interrupted(-code, request)
        outcome = (
            FitOutcome.model_validate(read_json(process.outcome_path, "train"))
            if process.outcome_path.is_file()
            else FitOutcome(error_type="Exit", error=f"exit code {code}, no outcome written")
        )
    finally:
        process.close()
    if request.cfg.strategy == "ddp" and outcome.report is None and not outcome.user_error:
        # A rank that died (killed, out of memory) shows in rank 0 as a failed collective or,
        # from Lightning's watch over the ranks it launched, as a kill: a retry either way.
        raise TrainingInterrupted(
            f"a rank of the DDP training failed ({outcome.error_type}: {outcome.error}); "
            f"{_what_is_kept(request)}"
        )
    return outcome.report_or_raise()


def _what_is_kept(request: FitRequest) -> str:
    last = request.checkpoints / f"{LAST_CHECKPOINT}.ckpt"
    if last.is_file():
        return (
            f"the checkpoint after epoch {completed_epochs(last)} is kept, and training again "
            "resumes from it"
        )
    return "no epoch had finished, so training again starts from the beginning"


def _interrupted(signal_number: int, request: FitRequest) -> TrainingInterrupted:
    name = signal.Signals(signal_number).name if signal_number in signal.valid_signals() else "?"
    kept = _what_is_kept(request)
    hint = " (often the out-of-memory killer: lower train.batch_size)" if name == "SIGKILL" else ""
    return TrainingInterrupted(
        f"the training process was killed by signal {signal_number} ({name}){hint}; {kept}"
    )
