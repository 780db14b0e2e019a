"""The `tune:` section: a hyperparameter search's size, its sampler and pruner, and its space.

A search space maps setting names to a `Range` or a `Choice`. The names are the model's own
settings (`train.model.c`, `hidden_units`, ...) or, for the models Lightning trains, the training
ones in `TRAINED_KEYS` (`learning_rate`, ...); whether a name exists, and whether the bounds are
values that setting allows, is checked against the chosen model at start-up
(`mlaas.core.trial_settings`), with the same bounds as the rest of `params.yaml`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from mlaas.core.section import Section

TRAINED_KEYS = ("learning_rate", "batch_size", "weight_decay")
"""`train` settings a search may vary for a network (scikit-learn models take theirs from
`train.model`)."""


class Range(Section):
    """Numbers from `low` to `high` (both included); whole numbers for a whole-number setting."""

    low: float
    high: float
    log: bool = False
    """Sample on a log scale (learning rates, regularisation strengths)."""
    step: float | None = Field(None, gt=0)
    """Only values `low + k * step` (not with `log`)."""

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range starts above 0, not at {self.low}")
        if self.log and self.step is not None:
            raise ValueError("set log or step, not both")
        return self


class Choice(Section):
    """One of these values (numbers, words, or lists such as layer widths)."""

    choices: list[Any] = Field(min_length=1, max_length=1000)


Dimension = Range | Choice


class TuneSettings(Section):
    """A hyperparameter search in place of a single fit (`trials: 0`, the default, fits once)."""

    trials: int = Field(0, ge=0, le=10_000)
    """How many trials to run; the best one's settings are then trained as the pipeline's model."""
    timeout_s: float | None = Field(None, gt=0, le=30 * 24 * 3600)
    """No trial starts after this many seconds of search (running ones finish)."""
    parallel: int = Field(1, ge=1, le=256)
    """Trials at once. Above 1 they run on a Dask cluster: a local one (this many worker
    processes for scikit-learn models, this many threads for networks, which train in processes
    of their own), or the one at `dask_address`."""
    dask_address: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://\S+$")
    """A running Dask scheduler (`tcp://host:8786`) to run the trials on instead of a local
    cluster. Its workers need this machine's Prefect and MLflow settings and its split files."""
    sampler: Literal["tpe", "random"] = "tpe"
    """How the next trial's settings are chosen: Optuna's TPE (from what the finished trials
    reached), or uniformly at random. Seeded by `pipeline.seed` and each trial's place."""
    pruner: Literal["median", "none"] = "median"
    """Stop a network's trial after an epoch whose validation metric is worse than the median
    of the earlier trials' at that epoch."""
    pruning_startup_trials: int = Field(5, ge=0)
    """Trials that finish before any is pruned."""
    pruning_warmup_epochs: int = Field(0, ge=0)
    """Epochs a trial always runs before it may be pruned."""
    search_space: dict[str, Dimension] = Field(default_factory=dict)
    """Setting name -> `{low, high, log, step}` or `{choices: [...]}`; empty: the model's own
    default space (each model declares one)."""
