"""What a trained model is: its family, task, data, settings and served input, saved beside its
weights. The core's own record of a model, so tasks and promotion need no family to read it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from mlaas.core.model_settings import ModelSettings, model_name

Label = int | str
TaskName = Literal["classification", "regression", "rating"]
Kind = TypeVar("Kind", bound=BaseModel)


class CardInputs(BaseModel):
    """Base of a family's `inputs`: what one served instance is, in the family's own terms."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Inputs = TypeVar("Inputs", bound=CardInputs)


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
    a text length limit): a family's `CardInputs` as JSON, read back with `inputs_as`."""

    @property
    def labels(self) -> list[Label]:
        """`classes`, for a classifier: an error for a card that lacks them."""
        if self.classes is None:
            raise ValueError(
                f"the model card of {self.family} model {self.model.name!r} lists no classes; "
                f"a {self.task} model needs them: train it again"
            )
        return self.classes

    def inputs_as(self, kind: type[Inputs]) -> Inputs:
        """`inputs` read as the family's own shape; an error that says what does not fit."""
        try:
            return kind.model_validate(self.inputs)
        except ValidationError as error:
            raise ValueError(
                f"the model card of {self.family} model {self.model.name!r} has inputs "
                f"{self.inputs!r}, which are not {kind.__name__}: {error}"
            ) from None

    def model_as(self, kind: type[Kind]) -> Kind:
        """`model`, known to be a `kind` (the settings of the one model a recipe builds)."""
        if not isinstance(self.model, kind):
            raise ValueError(
                f"the model card names model {self.model.name!r}, where a {model_name(kind)!r} "
                f"model was expected (the {self.family} family builds it from this card)"
            )
        return self.model


CARD_FILE = "card.json"


def read_card(model_dir: Path) -> ModelCard:
    """The card saved in a model folder: read without loading the model (or torch)."""
    return ModelCard.model_validate_json((model_dir / CARD_FILE).read_text())


def write_card(card: ModelCard, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n")
