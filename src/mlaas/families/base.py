"""What a model family provides, so that one flow serves every family without branching on it.

A family is data, loaders and small pure functions: a loader per source, the frame its
expectation suite checks, the suite, how rows become tensors, the network, and the schema of one
served instance. The stages own the mechanism (splitting, training, tracking, registry, serving).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict

from mlaas.settings import LoadSettings, ModelSettings, ValidateSettings

if TYPE_CHECKING:  # importing GX takes seconds; the serving path never needs it
    from great_expectations.expectations import Expectation

Label = int | str


class ModelCard(BaseModel):
    """Everything needed to rebuild a trained network and serve it, saved beside its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    task: Literal["classification"]
    dataset: str
    model: ModelSettings
    instance_shape: list[int]
    """Shape of one served instance, e.g. [28, 28] for a grey image."""
    classes: list[Label]
    """The label of each output, in output order."""


class Family(Protocol):
    """The parts of a model family the shared stages call."""

    name: str
    task: Literal["classification"]
    target_column: str

    def load(self, cfg: LoadSettings) -> pa.Table:
        """Read the named source into a table of inputs and the target column."""
        ...

    def dataset_name(self, cfg: LoadSettings) -> str:
        """The name the registry records as `mlaas.dataset`."""
        ...

    def validation_frame(self, table: pa.Table) -> pd.DataFrame:
        """The frame the expectation suite checks (one row per example)."""
        ...

    def expectations(
        self, table: pa.Table, load: LoadSettings, cfg: ValidateSettings
    ) -> list[Expectation]:
        """The expectation suite, following from the data's schema and the settings."""
        ...

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        """Describe the model to build for this data."""
        ...

    def inputs(self, table: pa.Table, card: ModelCard) -> torch.Tensor:
        """The model's input tensor for these rows, compact (uint8 for images)."""
        ...

    def build_network(self, card: ModelCard) -> torch.nn.Module:
        """The untrained network; it takes raw instances and returns one logit per class."""
        ...

    def augmentation(self, card: ModelCard) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """A random transform of a training batch, or None."""
        ...

    def instance_type(self, card: ModelCard) -> Any:
        """The pydantic type of one served instance (it becomes the OpenAPI schema)."""
        ...

    def instance_examples(self, table: pa.Table, card: ModelCard, count: int) -> np.ndarray:
        """A few rows as served instances (the registry's input example)."""
        ...


def class_indices(labels: np.ndarray, classes: list[Label]) -> torch.Tensor:
    """Map labels to output indices; a label outside `classes` is an error."""
    index = {label: position for position, label in enumerate(classes)}
    try:
        return torch.tensor([index[label] for label in labels.tolist()], dtype=torch.long)
    except KeyError as error:
        raise ValueError(f"label {error.args[0]!r} is not one of the model's classes") from None
