"""The Great Expectations gate on real data: digits passes; each kind of corruption fails it."""

import json

import numpy as np
import pytest

from mlaas.core.errors import ValidationFailed
from mlaas.core.records import DatasetInfo
from mlaas.core.settings import LoadSettings, PipelineSettings, Settings, ValidateSettings
from mlaas.families.image import ImageFamily, images_to_table, table_images
from mlaas.stages import validate
from mlaas.stages.context import StageContext
from mlaas.stores.files import write_table
from mlaas.stores.workspace import Workspace

family = ImageFamily()
pipeline = PipelineSettings(name="gate", family="image")
load = LoadSettings(source="digits")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    table = family.load(load)
    return table_images(table), np.asarray(table.column("label").to_pylist())


def _run_gate(workspace: Workspace, images: np.ndarray, labels: np.ndarray, **cfg: object):
    table = images_to_table(images, labels)
    path = workspace.pipeline(pipeline.name).dataset
    write_table(table, path)
    dataset = DatasetInfo(path=path, content_hash="h", rows=len(labels), dataset="digits")
    settings = Settings(pipeline=pipeline, load=load).model_copy(
        update={"validate_": ValidateSettings(**cfg)}
    )
    return validate.run(StageContext(settings, workspace), dataset)


def test_the_real_digits_pass_and_the_report_is_written(workspace: Workspace) -> None:
    report = _run_gate(workspace, *_digits(), min_rows=100)
    assert report.success and not report.failures
    assert report.evaluated >= 10
    assert report.result_path.is_file() and report.docs_index is None  # docs: on failure


def _set_pixels(images: np.ndarray, row: int, value: float) -> np.ndarray:
    changed = images.copy()
    changed[row] = value
    return changed


def _oversample(images: np.ndarray, labels: np.ndarray, label: int, times: int):
    extra = labels == label
    return (
        np.concatenate([images, np.repeat(images[extra], times, axis=0)]),
        np.concatenate([labels, np.repeat(labels[extra], times)]),
    )


CORRUPTIONS = {
    "out-of-range": (lambda x, y: (_set_pixels(x, 3, 300.0), y), "pixel_max"),
    "missing-image": (lambda x, y: (_set_pixels(x, 5, np.nan), y), "pixel_min"),
    "unseen-label": (lambda x, y: (x, np.where(np.arange(len(y)) == 0, 11, y)), "'label'"),
    "too-few-rows": (lambda x, y: (x[:50], y[:50]), "validate.min_rows"),
    "missing-class": (
        lambda x, y: (x[y != 7], y[y != 7]),
        "validate.expected_classes, column 'label': expected exactly the values",
    ),
    "imbalanced": (lambda x, y: _oversample(x, y, label=1, times=20), "label_share"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_each_corruption_fails_the_gate_with_a_readable_report(
    workspace: Workspace, case: str
) -> None:
    corrupt, expected = CORRUPTIONS[case]
    images, labels = corrupt(*_digits())
    with pytest.raises(ValidationFailed) as failure:
        _run_gate(workspace, images, labels, min_rows=100, min_class_share=0.05)
    message = str(failure.value)
    assert expected in message and "nothing was trained or registered" in message
    paths = workspace.pipeline(pipeline.name)
    result = json.loads(paths.validation_result.read_text())
    assert result["success"] is False
    assert (paths.validation_dir / "docs" / "index.html").is_file()
