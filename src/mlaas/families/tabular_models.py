"""The tabular family's models: the shared preprocessing, the MLP (Lightning) and the
scikit-learn estimators, each in a pipeline that takes raw rows."""

from __future__ import annotations

from collections.abc import Callable
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


class TabularPreprocessor:
    """The fitted column transformer, as float32 tensors for the MLP (saved with skops)."""

    FILE = "columns.skops"
    TRUSTED = ("numpy.dtype",)

    def __init__(self, kinds: dict[str, str], transformer: ColumnTransformer | None = None):
        self.kinds = kinds
        self.transformer = transformer or column_transformer(kinds)

    def fit(self, features: pd.DataFrame) -> TabularPreprocessor:
        self.transformer.fit(features)
        return self

    @property
    def width(self) -> int:
        """Columns after one-hot encoding: the network's input size."""
        return len(self.transformer.get_feature_names_out())

    def transform(self, features: pd.DataFrame) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.transformer.transform(features), dtype=np.float32))

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
        # scikit-learn internals these pipelines hold, beyond what skops trusts by default.
        trusted_types=(
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
            "sklearn.calibration._CalibratedClassifier",
            "sklearn.calibration._SigmoidCalibration",
        ),
    )
