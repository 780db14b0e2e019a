"""The tabular family on tiny real data and a tiny user file: types, preprocessing inside the
model, the instance schema, and the gate's learned ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import LogisticRegressionSettings, MlpSettings, RidgeSettings
from mlaas.core.settings import LoadSettings, TrainSettings, ValidateSettings
from mlaas.families.tabular import TabularFamily, infer_task
from mlaas.modeling.fitting import fit_model
from mlaas.stages.validate import check_frame

family = TabularFamily()


def _user_file(tmp_path: Path, rows: int = 120) -> Path:
    rng = np.random.default_rng(0)
    size = rng.normal(50, 10, rows)
    colour = rng.choice(["red", "green", "blue"], rows)
    frame = pd.DataFrame(
        {
            "size": np.where(np.arange(rows) % 17 == 0, np.nan, size),  # a few missing values
            "colour": colour,
            "ignored": "x",
            "price": size * 2 + (colour == "red") * 30 + rng.normal(0, 1, rows),
            "expensive": np.where(size * 2 + (colour == "red") * 30 > 110, "yes", "no"),
        }
    )
    path = tmp_path / "shop.csv"
    frame.to_csv(path, index=False)
    return path


def test_shipped_data_sets_load_with_their_task() -> None:
    cancer = family.load(LoadSettings(source="breast_cancer"))
    assert cancer.num_rows == 569 and "target" in cancer.column_names
    assert set(cancer.column("target").to_pylist()) == {"malignant", "benign"}
    assert family.task(LoadSettings(source="diabetes")) == "regression"
    assert family.task(LoadSettings(source="wine")) == "classification"


def test_task_is_inferred_from_the_target() -> None:
    assert infer_task(pd.Series(["a", "b"])) == "classification"
    assert infer_task(pd.Series([0, 1, 1, 2])) == "classification"
    assert infer_task(pd.Series([0.5, 1.25, 3.0])) == "regression"
    assert infer_task(pd.Series(range(100))) == "regression"


def test_user_file_columns_types_and_errors(tmp_path: Path) -> None:
    path = _user_file(tmp_path)
    load = LoadSettings(source=None, path=path, target="price", features=["size", "colour"])
    table = family.load(load)
    assert table.column_names == ["size", "colour", "price"]
    assert family.task(load) == "regression"
    card = family.model_card(table, load, RidgeSettings())
    assert card.inputs["features"] == {"size": "number", "colour": "category"}
    assert card.dataset == "shop"
    with pytest.raises(SettingsError, match="not in the data"):
        family.load(load.model_copy(update={"target": "cost"}))
    with pytest.raises(SettingsError, match="does not do regression"):
        family.model_card(table, load, LogisticRegressionSettings())
    with pytest.raises(SettingsError, match=r"load\.path: .*missing\.csv does not exist"):
        family.load(load.model_copy(update={"path": tmp_path / "missing.csv"}))


@pytest.mark.parametrize("model", [LogisticRegressionSettings(), MlpSettings(hidden_units=[16])])
def test_the_model_takes_raw_rows_with_nulls_and_unseen_categories(
    tmp_path: Path, model: LogisticRegressionSettings | MlpSettings
) -> None:
    load = LoadSettings(
        source=None, path=_user_file(tmp_path), target="expensive", features=["size", "colour"]
    )
    table = family.load(load)
    card = family.model_card(table, load, model)
    trained, _ = fit_model(
        family,
        card,
        table.slice(0, 100),
        table.slice(100),
        TrainSettings(model=model, max_epochs=30, learning_rate=0.01, accelerator="cpu"),
        tmp_path / "checkpoints",
    )
    Instance = family.instance_type(card)
    instances = [
        Instance.model_validate({"size": 80.0, "colour": "red"}),
        Instance.model_validate({"size": None, "colour": "purple"}),  # imputed; unseen category
    ]
    probabilities = trained.predict(family.instances_to_features(instances, card))
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert card.classes is not None
    assert card.classes[int(probabilities[0].argmax())] == "yes"


def test_the_instance_schema_names_every_feature_and_nothing_else() -> None:
    table = family.load(LoadSettings(source="wine"))
    card = family.model_card(table, LoadSettings(source="wine"), LogisticRegressionSettings())
    Instance = family.instance_type(card)
    row = family.example_instances(table, card, 1)[0]
    assert Instance.model_validate(row).model_dump(by_alias=True) == row
    for bad in (
        {**row, "colour": "red"},  # unknown feature
        {k: v for k, v in row.items() if k != "alcohol"},  # missing feature
        {**row, "alcohol": "13.2"},  # a string where a number goes
        {**row, "alcohol": float("nan")},
    ):
        with pytest.raises(ValidationError):
            Instance.model_validate(bad)


def test_the_gate_holds_later_data_to_the_ranges_learned_first(tmp_path: Path) -> None:
    load = LoadSettings(source="diabetes")
    first = family.validation_frame(family.load(load), load)
    reference = family.reference_profile(first, load)
    cfg = ValidateSettings(min_rows=10)
    passed, _ = check_frame(first, family.expectations(first, load, cfg, reference), "t", tmp_path)
    assert passed
    drifted = first.assign(bmi=first["bmi"] * 10)  # ten times the learned range
    failed, result = check_frame(
        drifted, family.expectations(drifted, load, cfg, reference), "t", tmp_path
    )
    assert not failed
    failures = [
        r["expectation_config"]["kwargs"].get("column")
        for r in result["results"]
        if not r["success"]
    ]
    assert failures == ["bmi"]


def test_the_gate_catches_nulls_duplicates_and_a_missing_column(tmp_path: Path) -> None:
    load = LoadSettings(source="breast_cancer")
    frame = family.validation_frame(family.load(load), load)
    reference = family.reference_profile(frame, load)
    cfg = ValidateSettings(min_rows=10)
    broken = pd.concat([frame, frame.iloc[:100]], ignore_index=True)  # 100 duplicate rows
    broken.loc[300:500, "mean radius"] = None  # a third of a feature missing
    broken = broken.drop(columns=["worst area"])
    ok, result = check_frame(
        broken, family.expectations(broken, load, cfg, reference), "t", tmp_path
    )
    failed = {r["expectation_config"]["type"] for r in result["results"] if not r["success"]}
    assert not ok
    assert {
        "expect_column_to_exist",
        "expect_column_values_to_not_be_null",
        "expect_compound_columns_to_be_unique",
    } <= failed


def test_tables_keep_the_columns_they_were_given() -> None:
    table = pa.table({"a": [1.0, None], "b": ["x", None], "target": ["p", "q"]})
    card = family.model_card(
        table, LoadSettings(source="breast_cancer"), LogisticRegressionSettings()
    )
    features = family.features(table, card)
    assert list(features.columns) == ["a", "b"]
    assert features["b"].tolist() == ["x", None]


def test_records_become_the_frame_pandas_would_make_of_them() -> None:
    """Requests' records take a fast path to features (`_typed_records`): it must give what the
    pandas path (`_typed` of their DataFrame) gives, value for value and dtype for dtype."""
    from mlaas.families.tabular import NUMBER, _typed, _typed_records

    kinds = {"n": NUMBER, "m": NUMBER, "c": "category"}
    cases: list[list[dict[str, object]]] = [
        [{"n": 1, "m": 2.5, "c": "a"}],
        [{"n": None, "m": float("nan"), "c": None}, {"n": True, "m": 0, "c": 3}],
        [{"n": "1.5", "m": "1_000", "c": 1.5}, {"n": "x", "m": " 2 ", "c": float("nan")}],
        [{"n": 2**70, "m": -(2**70), "c": True}],
        [{"m": 1.0}, {"n": 2, "c": "b", "extra": "ignored"}],
        [{"n": float("inf"), "m": "nan", "c": ""}],
    ]
    for rows in cases:
        expected = _typed(pd.DataFrame(rows, columns=list(kinds)), kinds)
        pd.testing.assert_frame_equal(_typed_records(rows, kinds), expected)
