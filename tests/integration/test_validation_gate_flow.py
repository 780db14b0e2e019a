"""A data set that fails the gate stops the flow: a report is written, nothing is registered."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.conftest import shrink, write_params

from mlaas.core.errors import ValidationFailed
from mlaas.core.settings import Settings
from mlaas.families import OUTLINES, image
from mlaas.stores.registry import Registry
from mlaas.stores.workspace import Workspace

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
    outline = OUTLINES["image"]
    sources = {**outline.sources, "digits-corrupted": "classification"}
    monkeypatch.setitem(OUTLINES, "image", dataclasses.replace(outline, sources=sources))
    settings = shrink(project_settings, "corrupted", load={"source": "digits-corrupted"})
    with pytest.raises(ValidationFailed, match="pixel_max") as failure:
        training_pipeline(
            params=str(write_params(settings, tmp_path)), home=str(session_workspace.home)
        )
    assert "pixel_min" in str(failure.value)

    assert_stopped_at_the_gate(session_workspace, "corrupted")
    failed = {row["column"] for row in gate_summary("corrupted") if not row["passed"]}
    assert {"pixel_max", "pixel_min"} <= failed


def test_a_bad_user_csv_stops_the_flow_before_training(
    prefect_server: None, project_settings: Settings, session_workspace: Workspace, tmp_path: Path
) -> None:
    """The user's own file, through `load.path`: duplicated rows and a column mostly empty
    (tests/integration/test_bad_data.py tries every kind of bad file at the stage level)."""
    from flows.training_pipeline import training_pipeline

    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {"size": rng.normal(50, 10, 100), "label": np.where(np.arange(100) % 2, "a", "b")}
    )
    rows.loc[:40, "size"] = None
    data = tmp_path / "shop.csv"
    pd.concat([rows, rows[:30]]).to_csv(data, index=False)
    settings = shrink(
        project_settings,
        "bad-user-csv",
        pipeline={"family": "tabular"},
        load={"source": None, "path": str(data), "target": "label"},
        train={"model": {"name": "logistic_regression"}},
    )
    with pytest.raises(ValidationFailed, match=r"validate\.max_duplicate_share") as failure:
        training_pipeline(
            params=str(write_params(settings, tmp_path)), home=str(session_workspace.home)
        )
    assert "validate.max_null_share, column 'size': expected at most 5% missing" in str(
        failure.value
    )
    assert_stopped_at_the_gate(session_workspace, "bad-user-csv")


def test_a_passing_gate_publishes_its_summary_too(pipeline_run: dict[str, Any]) -> None:
    """The Prefect UI shows the gate's table on every run, not only when it fails."""
    rows = gate_summary(pipeline_run["settings"].pipeline.name)
    assert rows and all(row["passed"] for row in rows)
    row_count = next(row for row in rows if row["setting"] == "validate.min_rows")
    assert row_count["rule"] == "at least 100 rows"
    assert row_count["observed"] == "1797 rows"  # sklearn's digits, all of them


def gate_summary(pipeline: str) -> list[dict[str, Any]]:
    """The rows of the newest gate summary a flow run published, read back with Prefect's client."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = f"{pipeline.replace('_', '-')}-validation"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert artifacts, f"no artifact {key!r}"
    newest = max(artifacts, key=lambda artifact: artifact.created or 0)
    assert newest.type == "table" and newest.flow_run_id is not None
    rows: list[dict[str, Any]] = json.loads(str(newest.data))
    return rows


def assert_stopped_at_the_gate(workspace: Workspace, name: str) -> None:
    """The gate's report is written; nothing was split, trained, tracked or registered."""
    paths = workspace.pipeline(name)
    assert paths.validation_result.is_file()
    assert (paths.validation_dir / "docs" / "index.html").is_file()
    assert not paths.training_result.exists() and not paths.splits_dir.exists()
    registry = Registry(workspace)
    assert registry.client.search_registered_models(f"name='{name}'") == []
    # The experiment may exist (the run's pre-flight check sets up the tracking store), empty.
    experiment = registry.client.get_experiment_by_name(name)
    if experiment is not None:
        assert registry.client.search_runs([experiment.experiment_id]) == []
