"""Each family as the settings see it: its models and their tasks, its data sets, its own data.

The one place a model is declared: by its settings class (`mlaas.core.model_settings`, whose
`name` gives the model's name) and the tasks it does. The early settings check, the families'
model lists and their error messages all read these outlines, which import nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from mlaas.core.errors import SettingsError
from mlaas.core.model_card import TaskName
from mlaas.core.model_settings import (
    CnnSettings,
    GradientBoostingSettings,
    LogisticRegressionSettings,
    MatrixFactorizationSettings,
    MiniLMSettings,
    MlpSettings,
    ModelSettings,
    RidgeSettings,
    SvmSettings,
    TfidfLinearSettings,
    TransformerSettings,
    model_name,
)


@dataclass(frozen=True)
class ModelOutline:
    """A model a family offers: its settings class (one of `ModelSettings`) and its tasks."""

    settings: type[BaseModel]
    tasks: tuple[TaskName, ...]

    @property
    def name(self) -> str:
        return model_name(self.settings)


@dataclass(frozen=True)
class OwnData:
    """What `load.path` must be for a family, and which `load` keys name columns of it."""

    kind: Literal["table", "image folder"]
    described: str
    """What to point `load.path` at, in the words of an error message."""
    columns: Mapping[str, str] = field(default_factory=dict)
    """Each `load` key that must name a column of the file, and what that column holds."""
    more_columns: tuple[str, ...] = ()
    """`load` keys that, when set, list further columns the file must have."""
    task: TaskName | None = None
    """The task of any data of this family; None: `load.task`, else inferred from the data."""


@dataclass(frozen=True)
class FamilyOutline:
    """A family as the settings see it: names, tasks and data, without its libraries."""

    name: str
    offers: tuple[ModelOutline, ...]
    """The models the family offers, in the order error messages list them."""
    sources: Mapping[str, TaskName]
    """Each data set it ships (`load.source`), and its task."""
    own_data: OwnData

    @property
    def models(self) -> dict[str, tuple[TaskName, ...]]:
        """Each `train.model.name` the family offers, and the tasks it does."""
        return {model.name: model.tasks for model in self.offers}

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(self.models)

    def offering(self, task: TaskName) -> list[str]:
        """The names of the models that do `task`."""
        return [name for name, tasks in self.models.items() if task in tasks]

    def require_model(self, model: ModelSettings) -> None:
        """A settings error unless the family offers `model`."""
        if model.name not in self.models:
            raise SettingsError(
                f"train.model.name: the {self.name} family has no model {model.name!r}; "
                f"choose one of {list(self.models)}"
            )

    def model_does_not_do(self, model: str, task: TaskName, because: str = "") -> SettingsError:
        """The error for a model asked to do a task it does not (`because`: why it is that
        task, such as `load.source 'wine' is classification`)."""
        why = f" ({because})" if because else ""
        return SettingsError(
            f"train.model.name: {model!r} does not do {task}{why}; "
            f"{self.name} {task} offers {', '.join(self.offering(task))}"
        )


BOTH_TASKS: tuple[TaskName, ...] = ("classification", "regression")

IMAGE_OUTLINE = FamilyOutline(
    name="image",
    offers=(ModelOutline(CnnSettings, ("classification",)),),
    sources=dict.fromkeys(("mnist", "fashion_mnist", "digits"), "classification"),
    own_data=OwnData("image folder", "a folder of class_name/ image folders", {}),
)
TABULAR_OUTLINE = FamilyOutline(
    name="tabular",
    offers=(
        ModelOutline(LogisticRegressionSettings, ("classification",)),
        ModelOutline(SvmSettings, BOTH_TASKS),
        ModelOutline(GradientBoostingSettings, BOTH_TASKS),
        ModelOutline(RidgeSettings, ("regression",)),
        ModelOutline(MlpSettings, BOTH_TASKS),
    ),
    sources={"breast_cancer": "classification", "wine": "classification", "diabetes": "regression"},
    own_data=OwnData(
        "table",
        "your CSV or parquet file",
        {"target": "the column to predict"},
        more_columns=("features",),
    ),
)
TEXT_OUTLINE = FamilyOutline(
    name="text",
    offers=tuple(
        ModelOutline(settings, ("classification",))
        for settings in (TfidfLinearSettings, TransformerSettings, MiniLMSettings)
    ),
    sources=dict.fromkeys(("rotten_tomatoes", "bbc_news"), "classification"),
    own_data=OwnData(
        "table",
        "a CSV of text and label columns",
        {"text_column": "the text", "target": "the label"},
        task="classification",
    ),
)
RECOMMENDATION_OUTLINE = FamilyOutline(
    name="recommendation",
    offers=(ModelOutline(MatrixFactorizationSettings, ("rating",)),),
    sources={"movielens_100k": "rating"},
    own_data=OwnData(
        "table",
        "a CSV of user, item and rating",
        {"user_column": "the user ids", "item_column": "the item ids", "target": "the rating"},
        task="rating",
    ),
)
