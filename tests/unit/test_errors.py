"""Every user-facing error lives in `mlaas.core.errors`, so the training process's errors come
back to the process that asked for the training as the very same class."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mlaas
from mlaas.core.errors import (
    LockTimeout,
    MlaasError,
    SettingsError,
    TamperedModel,
    UntrustedModel,
    error_class_named,
)
from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import CnnSettings
from mlaas.core.settings import TrainSettings
from mlaas.modeling import fitting


def _classes_and_bases(source: Path) -> dict[str, set[str]]:
    """Each class a module defines, with the names of its bases (`errors.X` read as `X`)."""
    tree = ast.parse(source.read_text(), filename=str(source))
    return {
        node.name: {
            base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            for base in node.bases
        }
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }


def test_every_user_facing_error_class_is_defined_in_the_errors_module() -> None:
    # Read, not imported: `mlaas.serving.service` cannot be imported without a packaged model.
    package = Path(mlaas.__file__).parent
    modules = {
        ".".join(path.relative_to(package.parent).with_suffix("").parts): _classes_and_bases(path)
        for path in sorted(package.rglob("*.py"))
    }
    error_names = {MlaasError.__name__}
    while True:
        found = {
            (module, name)
            for module, classes in modules.items()
            for name, bases in classes.items()
            if bases & error_names
        }
        if {name for _, name in found} <= error_names:
            break
        error_names |= {name for _, name in found}
    assert (
        sorted(f"{module}.{name}" for module, name in found if module != "mlaas.core.errors") == []
    )


@pytest.mark.parametrize("name", ["NoSuchError", "error_class_named", "__name__", "SystemExit"])
def test_a_name_that_is_no_error_of_the_errors_module_is_raised_as_a_plain_mlaas_error(
    name: str,
) -> None:
    assert error_class_named(name) is MlaasError


def _across_the_process_boundary(error: Exception) -> fitting.FitOutcome:
    """The outcome the training process writes for `error`, as the asking process reads it."""
    return fitting.FitOutcome.model_validate_json(
        fitting.FitOutcome.of_error(error).model_dump_json()
    )


@pytest.mark.parametrize("error_class", [UntrustedModel, TamperedModel, LockTimeout, SettingsError])
def test_a_user_error_of_the_training_process_is_raised_again_as_its_own_class(
    error_class: type[MlaasError],
) -> None:
    outcome = _across_the_process_boundary(error_class("what went wrong, and how to fix it"))
    with pytest.raises(MlaasError, match=r"^what went wrong, and how to fix it$") as raised:
        outcome.report_or_raise()
    assert type(raised.value) is error_class


def test_any_other_error_of_the_training_process_is_raised_as_a_failure_of_that_process() -> None:
    outcome = _across_the_process_boundary(ValueError("a bug"))
    with pytest.raises(RuntimeError, match="the training process failed: ValueError: a bug"):
        outcome.report_or_raise()


def _request(tmp_path: Path) -> fitting.FitRequest:
    model = CnnSettings()
    card = ModelCard(
        family="image",
        task="classification",
        dataset="digits",
        target="label",
        model=model,
        inputs={},
    )
    return fitting.FitRequest(
        family="image",
        card=card,
        cfg=TrainSettings(model=model),
        home=tmp_path,
        run_id="run",
        train_split=tmp_path / "train.parquet",
        val_split=tmp_path / "val.parquet",
        test_split=tmp_path / "test.parquet",
        checkpoints=tmp_path / "checkpoints",
        resume_from=None,
        model_dir=tmp_path / "model",
    )


@pytest.mark.slow
def test_a_real_training_process_that_fails_with_a_settings_error_raises_it_here(
    tmp_path: Path,
) -> None:
    request = _request(tmp_path).model_copy(update={"family": "no-such-family"})
    with pytest.raises(SettingsError, match="unknown family 'no-such-family'"):
        fitting.fit_in_training_process(request)
