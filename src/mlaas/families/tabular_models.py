"""The tabular family's models: the shared preprocessing, the MLP (Lightning) and the
scikit-learn estimators, each in a pipeline that takes raw rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlaas.core.model_card import ModelCard, TaskName
from mlaas.core.model_settings import (
    GradientBoostingSettings,
    LogisticRegressionSettings,
    MlpSettings,
    ModelSettings,
    RidgeSettings,
    SvmSettings,
)
from mlaas.core.reference import CATEGORY, NUMBER
from mlaas.families.base import NetworkRecipe, PipelineRecipe, Recipe
from mlaas.families.descriptions import number_block
from mlaas.families.inputs import TabularInputs
from mlaas.families.outlines import TABULAR_OUTLINE
from mlaas.stores.skops_files import load_skops

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline


def column_transformer(kinds: dict[str, str]) -> ColumnTransformer:
    """Median-impute and scale numbers; impute and one-hot encode categories."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = [name for name, kind in kinds.items() if kind == NUMBER]
    categories = [name for name, kind in kinds.items() if kind == CATEGORY]
    return ColumnTransformer(
        [
            (
                "numbers",
                Pipeline(
                    [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
                ),
                numbers,
            ),
            (
                "categories",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        (
                            "one_hot",
                            OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                        ),
                    ]
                ),
                categories,
            ),
        ],
        sparse_threshold=0.0,
    )


@dataclass(frozen=True)
class FittedColumns:
    """A fitted `column_transformer` as plain numpy: the same numbers for the same frame,
    without scikit-learn's per-call checks and pandas indexing (one served row of 30 numbers:
    3.4 ms through the ColumnTransformer, tens of microseconds here). `compile_columns` makes
    one only from a transformer whose every step it reproduces; equality with scikit-learn is
    tested on every tabular data set (tests/unit/test_fitted_columns.py)."""

    numbers: list[str]
    """The number columns kept: one that was all missing in training is dropped, as
    SimpleImputer drops it."""
    medians: np.ndarray
    means: np.ndarray
    scales: np.ndarray
    categories: list[str]
    fills: list[Any]
    """Each category column's most frequent training value, which a missing value becomes."""
    positions: list[dict[Any, int]]
    """Each category column's values, each to its column of the one-hot block."""
    width: int

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        rows = len(frame)
        out = np.zeros((rows, self.width), dtype=np.float64)
        if self.numbers:
            block = number_block(frame, self.numbers)  # a copy: imputing writes into it
            if np.isinf(block).any():  # refused as SimpleImputer refuses it
                raise ValueError("Input X contains infinity or a value too large for float64.")
            missing = np.isnan(block)
            if missing.any():
                block[missing] = np.broadcast_to(self.medians, block.shape)[missing]
            out[:, : len(self.numbers)] = (block - self.means) / self.scales
        for name, fill, positions in zip(self.categories, self.fills, self.positions, strict=True):
            for row, value in enumerate(frame[name].tolist()):
                # SimpleImputer's test for a missing object: NaN (value != value); None is kept,
                # and, never a training value, encodes as no category at all, as it does there.
                position = positions.get(fill if value != value else value)
                if position is not None:
                    out[row, position] = 1.0
        return out


def compile_columns(transformer: ColumnTransformer) -> FittedColumns | None:
    """`transformer`'s transform as FittedColumns, or None if it is not, step for step, a fitted
    `column_transformer` (then callers keep scikit-learn's own)."""
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = {
        name: (steps, list(columns))
        for name, steps, columns in getattr(transformer, "transformers_", [])
        if not (name == "remainder" and steps == "drop")
    }
    # In this order: the transformer's output is its parts' outputs side by side.
    if list(parts) != ["numbers", "categories"] or transformer.sparse_threshold != 0.0:
        return None
    (numbers_steps, numbers), (categories_steps, categories) = (
        parts["numbers"],
        parts["categories"],
    )
    medians = means = scales = np.zeros(0)
    kept_numbers: list[str] = []
    if numbers:
        impute, scale = _named_steps(numbers_steps, ("impute", "scale"))
        if not (
            _plain_imputer(impute, "median")
            and type(scale) is StandardScaler
            and scale.with_mean
            and scale.with_std
        ):
            return None
        kept = ~np.isnan(impute.statistics_)
        kept_numbers = [name for name, keep in zip(numbers, kept, strict=True) if keep]
        medians, means, scales = impute.statistics_[kept], scale.mean_, scale.scale_
    fills: list[Any] = []
    positions: list[dict[Any, int]] = []
    kept_categories: list[str] = []
    start = len(kept_numbers)
    if categories:
        impute, encode = _named_steps(categories_steps, ("impute", "one_hot"))
        if not (
            _plain_imputer(impute, "most_frequent")
            and type(encode) is OneHotEncoder
            and encode.handle_unknown == "ignore"
            and encode.drop_idx_ is None
            and not getattr(encode, "_infrequent_enabled", False)
        ):
            return None
        for name, fill in zip(categories, impute.statistics_, strict=True):
            if fill == fill:  # an all-missing training column is dropped (see numbers)
                kept_categories.append(name)
                fills.append(fill)
        for levels in encode.categories_:
            positions.append({value: start + index for index, value in enumerate(levels)})
            start += len(levels)
        if len(positions) != len(kept_categories):
            return None
    return FittedColumns(
        kept_numbers,
        medians,
        means,
        scales,
        kept_categories,
        fills,
        positions,
        start,
    )


def _named_steps(pipeline: Any, names: tuple[str, ...]) -> list[Any]:
    """The steps of a Pipeline of exactly these step names, in order; Nones for anything else
    (which no check below accepts)."""
    steps = getattr(pipeline, "named_steps", None)
    if steps is None or tuple(steps) != names:
        return [None] * len(names)
    return [steps[name] for name in names]


def _plain_imputer(step: Any, strategy: str) -> bool:
    """Whether `step` is a SimpleImputer of `strategy` adding no indicator columns."""
    from sklearn.impute import SimpleImputer

    return type(step) is SimpleImputer and step.strategy == strategy and not step.add_indicator


class TabularPreprocessor:
    """The fitted column transformer, as float32 tensors for the MLP (saved with skops)."""

    FILE = "columns.skops"
    TRUSTED = ("numpy.dtype",)

    def __init__(self, kinds: dict[str, str], transformer: ColumnTransformer | None = None):
        self.kinds = kinds
        self.transformer = transformer or column_transformer(kinds)
        self.fitted = None if transformer is None else compile_columns(transformer)

    def fit(self, features: pd.DataFrame) -> TabularPreprocessor:
        self.transformer.fit(features)
        self.fitted = compile_columns(self.transformer)
        return self

    @property
    def width(self) -> int:
        """Columns after one-hot encoding: the network's input size."""
        return len(self.transformer.get_feature_names_out())

    def transform(self, features: pd.DataFrame) -> torch.Tensor:
        values = (
            self.transformer.transform(features) if self.fitted is None else self.fitted(features)
        )
        return torch.from_numpy(np.asarray(values, dtype=np.float32))

    def save(self, folder: Path) -> None:
        import skops.io

        folder.mkdir(parents=True, exist_ok=True)
        skops.io.dump(self.transformer, folder / self.FILE)

    @classmethod
    def loader(cls, kinds: dict[str, str]) -> Callable[[Path], TabularPreprocessor]:
        def load(folder: Path) -> TabularPreprocessor:
            return cls(kinds, load_skops(folder / cls.FILE, cls.TRUSTED))

        return load


class Mlp(nn.Module):
    """Dense layers with ReLU and dropout; one output per class, or one value."""

    def __init__(self, inputs: int, cfg: MlpSettings, outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for hidden in cfg.hidden_units:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def estimator(model: ModelSettings, task: TaskName, seed: int) -> Any:
    """The scikit-learn estimator for a model name and task, or a settings error."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.svm import SVC, SVR

    classify = task == "classification"
    if isinstance(model, LogisticRegressionSettings) and classify:
        return LogisticRegression(C=model.c, max_iter=model.max_iter)
    if isinstance(model, SvmSettings):
        if classify:
            # Probabilities by Platt scaling on internal folds (what SVC(probability=True) did).
            svc = SVC(C=model.c, kernel=model.kernel, random_state=seed)
            return CalibratedClassifierCV(svc, ensemble=False)
        return SVR(C=model.c, kernel=model.kernel)
    if isinstance(model, GradientBoostingSettings):
        kind = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        return kind(
            max_iter=model.max_iter,
            learning_rate=model.learning_rate,
            max_leaf_nodes=model.max_leaf_nodes,
            l2_regularization=model.l2_regularization,
            random_state=seed,
        )
    if isinstance(model, RidgeSettings) and not classify:
        return Ridge(alpha=model.alpha)
    raise TABULAR_OUTLINE.model_does_not_do(model.name, task)


def tabular_recipe(card: ModelCard) -> Recipe:
    """The MLP on the preprocessed features, or a scikit-learn pipeline of both."""
    kinds = card.inputs_as(TabularInputs).features
    if isinstance(card.model, MlpSettings):
        cfg = card.model
        outputs = len(card.classes) if card.classes else 1
        return NetworkRecipe(
            new_preprocessor=lambda: TabularPreprocessor(kinds),
            load_preprocessor=TabularPreprocessor.loader(kinds),
            network=lambda pre: Mlp(pre.width, cfg, outputs),
        )

    def pipeline() -> Pipeline:
        from sklearn.pipeline import Pipeline

        return Pipeline(
            [
                ("preprocess", column_transformer(kinds)),
                ("model", estimator(card.model, card.task, card.seed)),
            ]
        )

    return PipelineRecipe(
        pipeline=pipeline,
        compile_preprocess=compile_columns,
        # scikit-learn internals these pipelines hold, beyond what skops trusts by default.
        trusted_types=(
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
            "sklearn.calibration._CalibratedClassifier",
            "sklearn.calibration._SigmoidCalibration",
        ),
    )
