"""A data set that fails the gate stops the flow: a report is written, nothing is registered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shrink, write_params

from mlaas.errors import ValidationFailed
from mlaas.families import image
from mlaas.registry import Registry
from mlaas.settings import Settings
from mlaas.workspace import Workspace

pytestmark = pytest.mark.slow


def _corrupted_digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = image.SOURCES["digits"].read()
    images[10, 2, 2, 0] = 999.0  # a pixel far out of range
    images[20] = np.nan  # an unreadable image
    return images, labels


def test_corrupted_data_stops_the_flow_before_training(
    prefect_server: None,
    project_settings: Settings,
    session_workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from flows.training_pipeline import training_pipeline

    # Register the corrupted copy as a data source, the way a shipped one is registered.
    monkeypatch.setitem(
        image.SOURCES,
        "digits-corrupted",
        image.ImageSource(_corrupted_digits, (8, 8, 1), list(range(10))),
    )
    settings = shrink(project_settings, "corrupted", load={"source": "digits-corrupted"})
    with pytest.raises(ValidationFailed, match="pixel_max") as failure:
        training_pipeline(
            params=str(write_params(settings, tmp_path)), home=str(session_workspace.home)
        )
    assert "pixel_min" in str(failure.value)

    paths = session_workspace.pipeline("corrupted")
    assert paths.validation_result.is_file()
    assert (paths.validation_dir / "docs" / "index.html").is_file()
    assert not paths.training_result.exists() and not paths.splits_dir.exists()
    registry = Registry(session_workspace)
    assert registry.client.search_registered_models("name='corrupted'") == []
    assert registry.client.get_experiment_by_name("corrupted") is None
