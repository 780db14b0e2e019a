from pathlib import Path

import pytest

from mlaas.core.errors import SettingsError
from mlaas.core.settings import Settings, load_settings, parse_settings
from mlaas.families import get_family

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_params_file_is_valid_and_names_the_mnist_default() -> None:
    settings = load_settings(PROJECT_ROOT / "params.yaml")
    assert settings.pipeline.family == "image"
    assert settings.load.source == "mnist"
    assert settings.train.model.conv_channels == [32, 64]


def test_an_unknown_key_is_an_error_that_names_it() -> None:
    with pytest.raises(SettingsError, match=r"train\.learning_rat"):
        parse_settings({"train": {"learning_rat": 0.1}})


def test_an_out_of_range_number_is_an_error_that_names_it() -> None:
    with pytest.raises(SettingsError, match=r"split\.test_size"):
        parse_settings({"split": {"test_size": 0.9}})


def test_an_unknown_model_name_is_an_error() -> None:
    with pytest.raises(SettingsError, match=r"train\.model"):
        parse_settings({"train": {"model": {"name": "random_forest"}}})


def test_an_unknown_family_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(SettingsError, match="choose one of"):
        get_family("audio")


def test_a_missing_or_malformed_params_file_says_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad)


def test_a_params_file_reads_exponents_as_numbers(tmp_path: Path) -> None:
    from mlaas.core.settings import read_params

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  learning_rate: 1e-4\n")
    assert read_params(params) == {"train": {"learning_rate": 1e-4}}
    assert load_settings(params).train.learning_rate == 1e-4


def test_settings_round_trip_through_their_params_form() -> None:
    settings = Settings()
    assert Settings.model_validate(settings.as_params()) == settings


def test_check_settings_refuses_what_cannot_run_before_any_work(tmp_path: Path) -> None:
    from mlaas.families import check_settings

    check_settings(Settings())  # the default: mnist with a CNN
    cases = {
        "pipeline.family": {"pipeline": {"family": "audio"}},
        "train.model.name": {"pipeline": {"family": "text"}, "load": {"source": "bbc_news"}},
        "load.source": {"load": {"source": "cifar10"}},
        "load.path": {"load": {"source": None, "path": str(tmp_path / "nowhere")}},
    }
    for key, raw in cases.items():
        with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
            check_settings(parse_settings(raw))
    with pytest.raises(SettingsError, match="exactly one of"):
        parse_settings({"load": {"source": "mnist", "path": "x.csv"}})


def test_a_queue_smaller_than_one_request_is_an_error() -> None:
    with pytest.raises(SettingsError, match="max_queued_instances"):
        parse_settings({"serve": {"max_instances": 512, "max_queued_instances": 100}})


def test_every_model_is_declared_by_exactly_one_family() -> None:
    """A model is declared once: its settings class in the union, offered by one outline."""
    from mlaas.core.model_settings import MODEL_SETTINGS, model_name
    from mlaas.families import OUTLINES

    offered = [model.settings for outline in OUTLINES.values() for model in outline.offers]
    assert sorted(offered, key=model_name) == sorted(MODEL_SETTINGS, key=model_name)
    names = [model_name(settings) for settings in MODEL_SETTINGS]
    assert len(set(names)) == len(names)
    for outline in OUTLINES.values():
        assert get_family(outline.name).models == outline.model_names


def test_a_model_of_another_family_or_task_is_refused_with_the_models_that_fit() -> None:
    from mlaas.core.model_settings import CnnSettings
    from mlaas.families.outlines import TABULAR_OUTLINE

    with pytest.raises(SettingsError, match=r"no model 'cnn'; choose one of \['logistic_regr"):
        TABULAR_OUTLINE.require_model(CnnSettings())
    error = TABULAR_OUTLINE.model_does_not_do("ridge", "classification")
    assert str(error) == (
        "train.model.name: 'ridge' does not do classification; tabular classification offers "
        "logistic_regression, svm, gradient_boosting, mlp"
    )


def test_a_card_read_as_the_wrong_model_or_without_classes_says_so() -> None:
    from mlaas.core.model_card import ModelCard
    from mlaas.core.model_settings import CnnSettings, RidgeSettings

    card = ModelCard(
        family="image", task="classification", dataset="d", target="label", model=CnnSettings(),
        inputs={"shape": [8, 8]},
    )  # fmt: skip
    assert card.model_as(CnnSettings) == CnnSettings()
    with pytest.raises(ValueError, match="names model 'cnn', where a 'ridge' model"):
        card.model_as(RidgeSettings)
    with pytest.raises(ValueError, match="lists no classes"):
        _ = card.labels


def test_user_data_without_a_path_is_a_settings_error_naming_load_path() -> None:
    from mlaas.core.settings import LoadSettings

    load = LoadSettings.model_construct(source=None, path=None, name=None)
    with pytest.raises(SettingsError, match=r"load\.path"):
        _ = load.data_path
    with pytest.raises(SettingsError, match=r"load\.path"):
        _ = load.dataset_name


def test_a_deployment_runs_weekly_unless_its_schedule_is_set() -> None:
    assert parse_settings({}).deploy.every_seconds == 7 * 24 * 3600
    assert parse_settings({"deploy": {"interval_seconds": 60}}).deploy.every_seconds == 60
    assert parse_settings({"deploy": {"cron": "0 3 * * 1"}}).deploy.every_seconds is None


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ({"interval_seconds": 60, "cron": "0 3 * * 1"}, "set interval_seconds or cron, not both"),
        ({"cron": "weekly"}, "cron 'weekly' is not a cron schedule"),
        ({"interval_seconds": 0}, "deploy.interval_seconds: Input should be greater than"),
    ],
)
def test_a_schedule_that_cannot_run_is_an_error_that_names_the_key(
    deploy: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match="deploy") as refused:
        parse_settings({"deploy": deploy})
    assert message in str(refused.value)


def test_overrides_change_one_key_and_keep_the_rest_of_its_section(tmp_path: Path) -> None:
    from mlaas.core.settings import load_settings, with_overrides

    base = {"train": {"max_epochs": 5, "model": {"name": "cnn", "dropout": 0.25}}}
    merged = with_overrides(base, {"train": {"model": {"dropout": 0.5}}, "seed": 3})
    assert merged == {
        "train": {"max_epochs": 5, "model": {"name": "cnn", "dropout": 0.5}},
        "seed": 3,
    }
    assert base["train"]["model"]["dropout"] == 0.25  # the file's own mapping is left alone
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  max_epochs: 5\n")
    assert load_settings(params, {"train": {"max_epochs": 2}}).train.max_epochs == 2
    with pytest.raises(
        SettingsError, match=r"with the overrides is not valid:\n  train\.max_epochs"
    ):
        load_settings(params, {"train": {"max_epochs": 0}})


def test_cli_overrides_are_keys_and_yaml_values() -> None:
    from mlaas.cli.main import parse_overrides

    assert parse_overrides(["train.max_epochs=3", "train.model.conv_channels=[8, 16]"]) == {
        "train": {"max_epochs": 3, "model": {"conv_channels": [8, 16]}}
    }
    # YAML 1.2 numbers: PyYAML alone reads 1e-5 as the string "1e-5" (YAML 1.1 wants a dot).
    assert parse_overrides(["train.learning_rate=1e-5", "x.y=2E+3", "x.z=e5"]) == {
        "train": {"learning_rate": 1e-5},
        "x": {"y": 2000.0, "z": "e5"},
    }
    with pytest.raises(SettingsError, match="KEY=VALUE"):
        parse_overrides(["train.max_epochs"])
