"""The tabular family: rows of numbers and categories in, a class or a value out.

Shipped data: scikit-learn's breast_cancer and wine (classification) and diabetes
(regression); or the user's CSV / parquet file with a target column. Feature types are inferred
(numbers, or categories for everything else) and checked by the gate; the usual preprocessing
(imputation, scaling, one-hot encoding) is fitted on the training rows and lives inside the
saved model (`tabular_models`), so the served model takes raw rows:
`{"feature name": value, ...}`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import ConfigDict, Field, create_model

from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import MlpSettings, ModelSettings
from mlaas.core.reference import CATEGORY, NUMBER, InputSummary
from mlaas.core.settings import EvaluateSettings, LoadSettings, ValidateSettings
from mlaas.families.base import (
    ArrayInstances,
    ModelCard,
    Recipe,
    TaskName,
    as_text,
    classification_expectations,
    require_columns,
    set_by,
    shipped_source,
    sorted_labels,
    with_label_share,
)
from mlaas.families.descriptions import describe_table, learn_table
from mlaas.families.inputs import TabularInputs
from mlaas.families.outlines import TABULAR_OUTLINE
from mlaas.families.user_files import read_user_table

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

# A numeric target with at most this many distinct integer values is read as classes.
MAX_INFERRED_CLASSES = 20
MAX_SERVED_MAGNITUDE = 1e15
"""The endpoint refuses numbers beyond this: scaling them can overflow to infinity (a 500 before
this bound), and no feature of a real table is that large."""


@dataclass(frozen=True)
class TabularSource:
    read: Callable[[], tuple[pd.DataFrame, str]]
    """Returns the frame (features and target) and the target's name."""
    task: TaskName


def _sklearn_frame(loader_name: str, label_names: bool) -> Callable[[], tuple[pd.DataFrame, str]]:
    def read() -> tuple[pd.DataFrame, str]:
        from sklearn import datasets

        bunch = getattr(datasets, loader_name)(as_frame=True)
        frame = bunch.frame.copy()
        if label_names:
            frame["target"] = np.asarray(bunch.target_names, dtype=object)[frame["target"]]
        return frame, "target"

    return read


SOURCES: dict[str, TabularSource] = {
    "breast_cancer": TabularSource(_sklearn_frame("load_breast_cancer", True), "classification"),
    "wine": TabularSource(_sklearn_frame("load_wine", True), "classification"),
    "diabetes": TabularSource(_sklearn_frame("load_diabetes", False), "regression"),
}


@functools.lru_cache(maxsize=1)
def _read_once(path: Path, modified_ns: int) -> pd.DataFrame:
    """The user's table, read once per stage even though several steps ask for it (the task is
    inferred from it, then it is loaded); a changed file has a new time and is read again."""
    return read_user_table(path)


def feature_kinds(frame: pd.DataFrame, features: list[str]) -> dict[str, str]:
    """Numbers stay numbers (booleans too); every other column is a category."""
    return {
        name: NUMBER
        if pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name])
        else CATEGORY
        for name in features
    }


def infer_task(target: pd.Series) -> TaskName:
    """Text or few distinct integers: classes; other numbers: a value to regress."""
    values = target.dropna()
    if not pd.api.types.is_numeric_dtype(values):
        return "classification"
    integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
    return (
        "classification" if integral and values.nunique() <= MAX_INFERRED_CLASSES else "regression"
    )


class TabularFamily:
    name = TABULAR_OUTLINE.name
    models = TABULAR_OUTLINE.model_names

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(SOURCES)

    def _source(self, load: LoadSettings) -> TabularSource | None:
        return shipped_source(SOURCES, load, self.name, "your CSV or parquet file")

    def _frame(self, load: LoadSettings) -> tuple[pd.DataFrame, str]:
        source = self._source(load)
        if source is not None:
            return source.read()
        if load.target is None:
            raise SettingsError("load.target: name the column to predict in your data")
        path = load.data_path
        frame = _read_once(path, path.stat().st_mtime_ns if path.is_file() else 0)
        require_columns(frame, [load.target, *(load.features or [])], "load")
        return frame, load.target

    def target_column(self, load: LoadSettings) -> str:
        source = self._source(load)
        if source is not None:
            return "target"
        if load.target is None:
            raise SettingsError("load.target: name the column to predict in your data")
        return load.target

    def task(self, load: LoadSettings) -> TaskName:
        source = self._source(load)
        if source is not None:
            return source.task
        if load.task is not None:
            return load.task
        frame, target = self._frame(load)
        return infer_task(frame[target])

    def _features(self, frame: pd.DataFrame, load: LoadSettings, target: str) -> list[str]:
        return list(load.features or [name for name in frame.columns if name != target])

    def load(self, load: LoadSettings) -> pa.Table:
        frame, target = self._frame(load)
        columns = [*self._features(frame, load, target), target]
        return pa.Table.from_pandas(frame[columns], preserve_index=False)

    def validation_frame(self, table: pa.Table, load: LoadSettings) -> pd.DataFrame:
        frame = table.to_pandas()
        target = self.target_column(load)
        if self.task(load) == "classification":
            frame = with_label_share(frame, target)
        return frame

    def reference_profile(self, frame: pd.DataFrame, load: LoadSettings) -> dict[str, Any]:
        """Types, ranges and category sets of the first data set that passed the gate."""
        target = self.target_column(load)
        columns = [name for name in frame.columns if name != "label_share"]
        profile: dict[str, Any] = {}
        for name, kind in feature_kinds(frame, columns).items():
            values = frame[name].dropna()
            if kind == NUMBER:
                low, high = (float(values.min()), float(values.max())) if len(values) else (0, 0)
                profile[name] = {"kind": NUMBER, "min": low, "max": high}
            else:
                profile[name] = {"kind": CATEGORY, "values": sorted(map(str, values.unique()))}
        learned: dict[str, Any] = {"columns": profile, "target": target}
        if self.task(load) == "classification":
            learned["classes"] = sorted_labels(frame[target])
        return learned

    def expectations(
        self,
        frame: pd.DataFrame,
        load: LoadSettings,
        cfg: ValidateSettings,
        reference: dict[str, Any] | None,
    ) -> list[Expectation]:
        from great_expectations import expectations as gxe

        target = self.target_column(load)
        learned = (reference or self.reference_profile(frame, load))["columns"]
        present = [name for name in learned if name in frame.columns]
        suite: list[Expectation] = [
            gxe.ExpectTableRowCountToBeBetween(
                min_value=cfg.min_rows, meta=set_by("validate.min_rows")
            )
        ]
        suite += [gxe.ExpectColumnToExist(column=name) for name in learned]
        suite.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=present,
                mostly=1.0 - cfg.max_duplicate_share,
                meta=set_by("validate.max_duplicate_share"),
            )
        )
        for name in present:
            profile = learned[name]
            is_target = name == target
            if not is_target:
                suite.append(
                    gxe.ExpectColumnValuesToNotBeNull(
                        column=name,
                        mostly=1.0 - cfg.max_null_share,
                        meta=set_by("validate.max_null_share"),
                    )
                )
            if profile["kind"] == NUMBER:
                span = profile["max"] - profile["min"]
                slack = cfg.range_tolerance * (span if span else abs(profile["max"]) or 1.0)
                suite += [
                    gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES),
                    gxe.ExpectColumnValuesToBeBetween(
                        column=name,
                        min_value=profile["min"] - slack,
                        max_value=profile["max"] + slack,
                        meta=set_by("validate.range_tolerance"),
                    ),
                ]
            elif not is_target:
                suite.append(
                    gxe.ExpectColumnValuesToBeInSet(
                        column=name, value_set=profile["values"], mostly=1.0 - cfg.max_null_share
                    )
                )
        if self.task(load) == "classification":
            learned_classes = (reference or {}).get("classes") or sorted_labels(frame[target])
            suite += classification_expectations(
                target, cfg.expected_classes or learned_classes, cfg
            )
        else:
            suite.append(gxe.ExpectColumnValuesToNotBeNull(column=target))
        return suite

    def model_card(self, table: pa.Table, load: LoadSettings, model: ModelSettings) -> ModelCard:
        TABULAR_OUTLINE.require_model(model)
        task = self.task(load)
        target = self.target_column(load)
        frame = table.to_pandas()
        features = [name for name in frame.columns if name != target]
        if not isinstance(model, MlpSettings):
            from mlaas.families.tabular_models import estimator

            estimator(model, task, 0)  # refuses a model that does not do this task
        return ModelCard(
            family=self.name,
            task=task,
            dataset=load.dataset_name,
            target=target,
            model=model,
            classes=sorted_labels(frame[target]) if task == "classification" else None,
            inputs=TabularInputs(features=feature_kinds(frame, features)).model_dump(),
        )

    def features(self, table: pa.Table, card: ModelCard) -> pd.DataFrame:
        kinds = card.inputs_as(TabularInputs).features
        frame = table.select(list(kinds)).to_pandas()
        return _typed(frame, kinds)

    def recipe(self, card: ModelCard) -> Recipe:
        from mlaas.families.tabular_models import tabular_recipe  # torch, scikit-learn

        return tabular_recipe(card)

    def array_instances(self, card: ModelCard) -> ArrayInstances | None:
        return None  # instances are objects

    def instance_type(self, card: ModelCard) -> Any:
        """An object with every feature as a key (null allowed: it is imputed), nothing else."""
        kinds = card.inputs_as(TabularInputs).features
        fields: dict[str, Any] = {}
        for position, (name, kind) in enumerate(kinds.items()):
            value_type = (
                float | None if kind == NUMBER else str | None
            )  # strict: "12" is not a number
            fields[f"f{position}"] = (
                value_type,
                Field(
                    alias=name,
                    strict=True,
                    allow_inf_nan=False,
                    ge=-MAX_SERVED_MAGNITUDE,
                    le=MAX_SERVED_MAGNITUDE,
                )
                if kind == NUMBER
                else Field(alias=name, strict=True, max_length=1000),
            )
        return create_model(
            "TabularInstance",
            __config__=ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_alias=True),
            **fields,
        )

    def instances_to_features(self, instances: list[Any], card: ModelCard) -> pd.DataFrame:
        kinds = card.inputs_as(TabularInputs).features
        rows = [
            item.model_dump(by_alias=True) if hasattr(item, "model_dump") else item
            for item in instances
        ]
        if all(isinstance(row, dict) for row in rows):
            return _typed_records(rows, kinds)
        return _typed(pd.DataFrame(rows, columns=list(kinds)), kinds)

    def example_instances(self, table: pa.Table, card: ModelCard, count: int) -> list[Any]:
        frame = self.features(table.slice(0, count), card)
        return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")

    def labelled_table(self, instances: list[Any], labels: list[Any], card: ModelCard) -> pa.Table:
        frame = self.instances_to_features(instances, card).assign(**{card.target: labels})
        return pa.Table.from_pandas(frame, preserve_index=False)

    def learn_inputs(self, features: pd.DataFrame, card: ModelCard) -> dict[str, Any]:
        return learn_table(features, card.inputs_as(TabularInputs).features)

    def describe_inputs(
        self, features: pd.DataFrame, card: ModelCard, learned: dict[str, Any]
    ) -> InputSummary:
        return describe_table(features, card.inputs_as(TabularInputs).features, learned)

    def extra_metrics(
        self, model: Any, train: pa.Table, test: pa.Table, cfg: EvaluateSettings
    ) -> dict[str, float]:
        return {}


NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "bool", "Int64", "Float64", "boolean",
]  # fmt: skip


def _typed_records(rows: list[dict[str, Any]], kinds: dict[str, str]) -> pd.DataFrame:
    """`_typed` of the records' frame, made column by column from the records: a request's
    few rows, where pandas' per-column conversions cost milliseconds (2.8 ms for one record of
    30 numbers; about 0.3 ms this way)."""
    index = pd.RangeIndex(len(rows))
    if all(kind == NUMBER for kind in kinds.values()):
        # One float block, as pandas would consolidate it: building the frame from it is a
        # tenth of building it from one array per column.
        block = np.array([_as_floats([row.get(name) for row in rows]) for name in kinds]).T
        return pd.DataFrame(block.reshape(len(rows), len(kinds)), columns=list(kinds), index=index)
    columns: dict[str, Any] = {}
    for name, kind in kinds.items():
        values = [row.get(name) for row in rows]
        if kind == NUMBER:
            columns[name] = _as_floats(values)
        else:
            # Text as pandas makes it of the column it infers (numbers beside a null become
            # floats: 3 is "3.0" then), and of object dtype, not pandas' string dtype.
            text = as_text(pd.Series(values, index=index))
            columns[name] = pd.Series(text, index=index, dtype=object)
    return pd.DataFrame(columns, index=index)


def _as_floats(values: list[Any]) -> np.ndarray:
    """`pd.to_numeric(errors="coerce")` as float64, at numpy's speed where every value is a
    JSON number, true/false or null (text goes to pandas: it parses "1_000" as no number, where
    Python's float reads 1000)."""
    if all(value is None or type(value) in (int, float, bool) for value in values):
        return np.array(values, dtype=np.float64)
    column = pd.Series(values, dtype=object)
    return np.asarray(pd.to_numeric(column, errors="coerce").astype("float64"))


def _typed(frame: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Numbers as float (missing: NaN), categories as text (missing: None)."""
    typed = {}
    for name, kind in kinds.items():
        column = frame[name]
        if kind == NUMBER:
            typed[name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            # object, not pandas' string dtype: scikit-learn's imputer expects None for missing.
            typed[name] = pd.Series(as_text(column), index=frame.index, dtype=object)
    return pd.DataFrame(typed, index=frame.index)
