"""A training process's link to the search trial it fits: per-epoch reports to Optuna's pruner.

The trial's process (a Dask worker's task) asks the study for a trial and starts the training
process; that process opens the same study from the same storage and reports each epoch's
validation metric through optuna-integration's Lightning callback. A pruned trial leaves the
fit as `TrialWasPruned`, which the outcome file carries back to the trial's process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlaas.core.search_space import TuneSettings
from mlaas.stores.studies import open_study
from mlaas.stores.workspace import Workspace

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback


class TrialLink(BaseModel):
    """Which trial of which study a training reports to, and on which metric."""

    model_config = ConfigDict(frozen=True)

    study: str
    trial_id: int
    """Optuna's storage id of the trial (not its number)."""
    tune_dir: Path
    monitor: str
    """The validation metric reported after each epoch (the search's objective)."""
    tune: TuneSettings
    """Its pruner (Optuna keeps none in the storage: each process opens the study with it)."""


def pruning_callback(link: TrialLink, workspace: Workspace) -> Callback:
    """optuna-integration's Lightning pruning callback on the linked trial, deciding at the end
    of each epoch rather than of its validation: after the epoch's metrics went to MLflow (a
    callback before it in the list), so a pruned trial keeps the learning curve it was pruned on."""
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    class PruningAfterTheEpoch(PyTorchLightningPruningCallback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            pass

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            super().on_validation_end(trainer, pl_module)

    study = open_study(workspace, link.tune_dir, link.study, link.tune, seed=0)
    return PruningAfterTheEpoch(optuna.trial.Trial(study, link.trial_id), link.monitor)
