"""What a trained model is: its family, task, data, settings and served input, saved beside its
weights. The core's own record of a model, so tasks and promotion need no family to read it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mlaas.core.settings import ModelSettings

Label = int | str
TaskName = Literal["classification", "regression", "rating"]


class ModelCard(BaseModel):
    """Everything needed to rebuild a trained model and serve it, saved beside its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str
    task: TaskName
    dataset: str
    target: str
    """The column the model predicts."""
    model: ModelSettings
    seed: int = 0
    """The pipeline's seed (models with randomness of their own take it)."""
    classes: list[Label] | None = None
    """Classification: the label of each output, in output order."""
    target_range: list[float] | None = None
    """Rating: predictions are clamped to [low, high]."""
    inputs: dict[str, Any]
    """What one served instance is, in the family's own terms (an image shape, feature types,
    a text length limit)."""
