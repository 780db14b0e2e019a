"""`compile_columns`: the tabular preprocessing as plain numpy gives exactly scikit-learn's
numbers, on every shipped data set and on rows with what serving meets (missing numbers, missing
and unseen categories, a column that was all missing in training); anything it does not
reproduce step for step falls back to scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlaas.core.model_settings import (
    GradientBoostingSettings,
    LogisticRegressionSettings,
    MlpSettings,
)
from mlaas.core.settings import LoadSettings, TrainSettings
from mlaas.families.tabular import SOURCES, TabularFamily
from mlaas.families.tabular_models import column_transformer, compile_columns
from mlaas.modeling.fitting import fit_model
from mlaas.modeling.models import PipelineModel

family = TabularFamily()


def _same(transformer: object, frame: pd.DataFrame) -> None:
    compiled = compile_columns(transformer)  # type: ignore[arg-type]
    assert compiled is not None
    expected = transformer.transform(frame)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(compiled(frame), expected)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_shipped_data_set_preprocesses_to_scikit_learns_numbers(source: str) -> None:
    load = LoadSettings(source=source)
    table = family.load(load)
    card = family.model_card(table, load, GradientBoostingSettings())
    frame = family.features(table, card)
    transformer = column_transformer(card.inputs["features"]).fit(frame)
    _same(transformer, frame)
    # Served rows come through instances_to_features, one request's few rows at a time.
    instances = family.example_instances(table, card, 3)
    _same(transformer, family.instances_to_features(instances, card))


def _mixed(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "size": np.where(np.arange(rows) % 7 == 0, np.nan, rng.normal(50, 10, rows)),
            "weight": rng.normal(5, 1, rows),
            "never": np.full(rows, np.nan),  # all missing in training: dropped by the imputer
            "colour": pd.Series(rng.choice(["red", "green", "blue"], rows), dtype=object),
            "shape": pd.Series(
                [None if i % 5 == 0 else ("round" if i % 2 else "square") for i in range(rows)],
                dtype=object,
            ),
            "nothing": pd.Series([np.nan] * rows, dtype=object),
        }
    )


KINDS = {
    "size": "number",
    "weight": "number",
    "never": "number",
    "colour": "category",
    "shape": "category",
    "nothing": "category",
}


def test_missing_unseen_and_all_missing_columns_match_scikit_learn() -> None:
    transformer = column_transformer(KINDS).fit(_mixed(60))
    served = pd.DataFrame(
        {
            "size": [np.nan, 1e9, 48.0, -3.5],
            "weight": [5.0, np.nan, 4.0, 0.0],
            "never": [1.0, np.nan, 2.0, 3.0],
            "colour": pd.Series(["purple", np.nan, "red", None], dtype=object),
            "shape": pd.Series([np.nan, None, "round", "square"], dtype=object),
            "nothing": pd.Series(["x", np.nan, None, "y"], dtype=object),
        }
    )
    _same(transformer, served)
    _same(transformer, served.iloc[:1])


def test_an_infinite_number_is_refused_as_scikit_learn_refuses_it() -> None:
    transformer = column_transformer(KINDS).fit(_mixed(30))
    served = _mixed(2).assign(size=[np.inf, 1.0])
    compiled = compile_columns(transformer)
    assert compiled is not None
    for transform in (compiled, transformer.transform):
        with pytest.raises(ValueError, match="infinity"):
            transform(served)


def test_only_numbers_or_only_categories() -> None:
    numbers = {"size": "number", "weight": "number"}
    _same(column_transformer(numbers).fit(_mixed(30)[list(numbers)]), _mixed(9)[list(numbers)])
    categories = {"colour": "category", "shape": "category"}
    frame = _mixed(30)[list(categories)]
    _same(column_transformer(categories).fit(frame), _mixed(9)[list(categories)])


def test_a_transformer_it_does_not_reproduce_is_left_to_scikit_learn() -> None:
    from sklearn.preprocessing import MinMaxScaler

    transformer = column_transformer(KINDS)
    transformer.transformers[0][1].steps[1] = ("scale", MinMaxScaler())
    assert compile_columns(transformer.fit(_mixed(30))) is None
    assert compile_columns(column_transformer(KINDS)) is None  # not fitted


@pytest.mark.parametrize("model", [LogisticRegressionSettings(), MlpSettings()])
def test_the_models_predict_with_the_compiled_preprocessing(model: object, tmp_path: Path) -> None:
    frame = _mixed(80)[["size", "weight", "colour", "shape"]].assign(label=["yes", "no"] * 40)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    load = LoadSettings(source=None, path=tmp_path / "rows.csv", target="label")
    card = family.model_card(table, load, model)  # type: ignore[arg-type]
    trained, _ = fit_model(
        family, card, table, table, TrainSettings(max_epochs=1, model=model), tmp_path
    )
    features = family.features(table, card)
    if isinstance(trained, PipelineModel):
        assert trained.preprocess is not None
        expected = trained.pipeline.predict_proba(features)
        np.testing.assert_allclose(trained.predict(features), expected, rtol=1e-6)
    else:
        assert trained.preprocessor.fitted is not None
