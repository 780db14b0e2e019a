"""Where a hyperparameter search keeps its trials: an Optuna storage chosen by the workspace.

One machine: a `JournalStorage` file under the pipeline's `tune/` folder, which processes on that
machine share safely (appends under a file lock). Team mode (the workspace has the team's
PostgreSQL lock database): the `optuna` database on the same server, through Optuna's RDB
storage, so trials run on several machines add to one study. Not SQLite RDB storage: it locks
under parallel trials. Each process builds the storage from its own workspace, so no password
travels in a task's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mlaas.core.search_space import TuneSettings
from mlaas.stores.workspace import Workspace, redacted

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

STUDY_DATABASE = "optuna"
JOURNAL_FILE = "studies.journal"


def team_study_url(lock_uri: str) -> str:
    """The `optuna` database beside the team's lock database, for SQLAlchemy with psycopg 3."""
    parts = urlsplit(lock_uri)
    scheme = "postgresql+psycopg"
    return urlunsplit((scheme, parts.netloc, f"/{STUDY_DATABASE}", parts.query, ""))


def study_location(workspace: Workspace, tune_dir: Path) -> str:
    """Where the studies are, for a person to read (no password)."""
    if workspace.lock_uri:
        return redacted(team_study_url(workspace.lock_uri))
    return str(tune_dir / JOURNAL_FILE)


def study_storage(workspace: Workspace, tune_dir: Path) -> BaseStorage:
    """The Optuna storage of this workspace's searches (see the module's docstring)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if workspace.lock_uri:
        return optuna.storages.RDBStorage(
            team_study_url(workspace.lock_uri),
            # A connection checked before use: a trial may wait minutes between two reports.
            engine_kwargs={"pool_pre_ping": True},
        )
    tune_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(tune_dir / JOURNAL_FILE)))


def open_study(
    workspace: Workspace,
    tune_dir: Path,
    name: str,
    tune: TuneSettings,
    seed: int,
) -> optuna.Study:
    """The study `name` (made by the search before its trials start), with the sampler and
    pruner `tune` names: each process that asks for or reports on a trial opens it so, since
    Optuna keeps neither in the storage. `seed` differs per trial slot, so that trials started
    together do not draw the same settings."""
    import optuna

    sampler: optuna.samplers.BaseSampler
    if tune.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.MedianPruner(
            n_startup_trials=tune.pruning_startup_trials, n_warmup_steps=tune.pruning_warmup_epochs
        )
        if tune.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    return optuna.load_study(
        study_name=name, storage=study_storage(workspace, tune_dir), sampler=sampler, pruner=pruner
    )
