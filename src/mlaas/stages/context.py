"""What every stage runs with: the settings, the family, the workspace, the lineage and a logger.

Each driver (the Prefect flow, `mlaas stage NAME`, `mlaas rollback`) builds one `StageContext`
and hands it to the stages it runs; a stage's own parameters are then only the records it reads.
The family and the lineage are found on first use: importing a family pulls in torch, and the
lineage asks git and every installed package, which `load` and `validate` need neither of.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from mlaas.core.lineage import Lineage, current_lineage
from mlaas.core.settings import PipelineSettings, Settings
from mlaas.families import get_family
from mlaas.stores.workspace import PipelinePaths, Workspace

if TYPE_CHECKING:
    from mlaas.families.base import Family
    from mlaas.modeling.training_process import TrainingProcess

STAGE_LOGGER = "mlaas.stages"


@dataclass(frozen=True)
class StageContext:
    """One pipeline run's settings and stores, shared by the stages it runs."""

    settings: Settings
    workspace: Workspace
    given_lineage: Lineage | None = None
    """The run's lineage when the driver already gathered it (the flow does, once, at its start)."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(STAGE_LOGGER))
    trainer: TrainingProcess | None = None
    """A training process the driver started ahead of the train stage (the flow does, for a
    network), which the stage hands its request to while it still waits."""

    @property
    def pipeline(self) -> PipelineSettings:
        return self.settings.pipeline

    @property
    def paths(self) -> PipelinePaths:
        """Where the pipeline's files are, under the workspace."""
        return self.workspace.pipeline(self.settings.pipeline.name)

    @cached_property
    def family(self) -> Family:
        return get_family(self.settings.pipeline.family)

    @cached_property
    def lineage(self) -> Lineage:
        if self.given_lineage is not None:
            return self.given_lineage
        return current_lineage(self.settings.as_params())
