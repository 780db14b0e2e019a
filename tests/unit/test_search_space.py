"""`tune:` is checked against the chosen model at start-up, and a trial's values become settings."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from mlaas.core.errors import SettingsError
from mlaas.core.model_settings import MODEL_SETTINGS, ModelSection
from mlaas.core.records import NO_SEARCH, SearchResult
from mlaas.core.settings import Settings, load_settings, parse_settings
from mlaas.core.trial_settings import (
    searched_keys,
    trained_settings,
    with_trial_values,
)
from mlaas.families import check_settings
from mlaas.modeling.tuning import suggest


def _settings(model: dict[str, Any], tune: dict[str, Any], family: str = "tabular") -> Settings:
    return parse_settings(
        {
            "pipeline": {"name": "t", "family": family},
            "load": {"source": "breast_cancer" if family == "tabular" else "digits"},
            "train": {"model": model},
            "tune": tune,
        }
    )


def test_a_key_the_model_does_not_have_is_an_error_at_start_up_naming_it() -> None:
    settings = _settings(
        {"name": "svm"}, {"trials": 4, "search_space": {"depth": {"low": 1, "high": 4}}}
    )
    with pytest.raises(
        SettingsError, match=r"tune.search_space.depth: the svm model has no setting"
    ):
        check_settings(settings)


def test_a_training_key_is_only_for_networks() -> None:
    space = {"batch_size": {"choices": [16, 32]}}
    with pytest.raises(SettingsError, match=r"tune.search_space.batch_size: the svm model has no"):
        searched_keys(_settings({"name": "svm"}, {"trials": 2, "search_space": space}))
    (key,) = searched_keys(_settings({"name": "mlp"}, {"trials": 2, "search_space": space}))
    assert key.section == "train" and key.whole


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"c": {"low": 0.0, "high": 10.0}},
            r"tune.search_space.c: 0.0 is not a value .*greater than 0",
        ),
        ({"kernel": {"choices": ["rbf", "cubic"]}}, r"tune.search_space.kernel: 'cubic' is not"),
        ({"c": {"low": 5.0, "high": 1.0}}, r"low \(5.0\) must be below high"),
        ({"c": {"low": 0.0, "high": 1.0, "log": True}}, r"a log range starts above 0"),
    ],
)
def test_bounds_are_the_settings_own(space: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        searched_keys(_settings({"name": "svm"}, {"trials": 3, "search_space": space}))


def test_a_whole_number_setting_takes_whole_bounds() -> None:
    space = {"max_iter": {"low": 10.5, "high": 100}}
    with pytest.raises(SettingsError, match="whole-number setting takes a range of whole numbers"):
        searched_keys(
            _settings({"name": "gradient_boosting"}, {"trials": 3, "search_space": space})
        )


def test_every_model_declares_a_default_space_its_own_settings_accept() -> None:
    project = load_settings("params.yaml")
    for model_class in MODEL_SETTINGS:
        assert issubclass(model_class, ModelSection)
        assert model_class.default_search_space, f"{model_class.__name__} declares no space"
        params = project.as_params()
        params["train"]["model"] = {"name": model_class.model_fields["name"].default}
        params["tune"] = {"trials": 2}
        keys = searched_keys(parse_settings(params))  # raises on a bound the model refuses
        assert {k.name for k in keys} == set(model_class.default_search_space)


def test_suggested_values_become_the_settings_a_trial_trains_with() -> None:
    space = {
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
        "hidden_units": {"choices": [[32], [64, 32]]},
        "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
    }
    settings = _settings({"name": "mlp"}, {"trials": 5, "search_space": space})
    keys = searched_keys(settings)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        values = suggest(study.ask(), keys)
        trial_settings = with_trial_values(settings, keys, values)
        assert trial_settings.train.learning_rate == values["learning_rate"]
        assert 1e-4 <= values["learning_rate"] <= 1e-2
        assert trial_settings.train.model.hidden_units in ([32], [64, 32])  # type: ignore[union-attr]
        assert round(values["dropout"] * 10, 6).is_integer()
    # The winner's values, as a search record carries them, are what `train` and `evaluate` use.
    won = SearchResult(trials=5, best_values={"hidden_units": [64, 32], "learning_rate": 0.003})
    assert trained_settings(settings, won).train.model.hidden_units == [64, 32]  # type: ignore[union-attr]
    assert trained_settings(settings, won).train.learning_rate == 0.003
    assert trained_settings(settings, NO_SEARCH) is settings


def test_no_search_by_default() -> None:
    settings = load_settings("params.yaml")
    assert settings.tune.trials == 0
    check_settings(settings)
