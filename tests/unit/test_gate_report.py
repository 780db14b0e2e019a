"""What a run tells its user: the gate's report names the setting to change and the value seen,
in one short paragraph; the closing line says how to serve exactly this pipeline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from flows.training_pipeline import gate_summary_key, gate_summary_rows, serve_command
from great_expectations import expectations as gxe

from mlaas.core.records import ValidationReport
from mlaas.core.settings import PipelineSettings
from mlaas.families.base import set_by
from mlaas.stages.validate import check_frame, gate_check, refusal


def gate_report(frame: pd.DataFrame, tmp_path: Path) -> ValidationReport:
    """The real gate (an ephemeral GX context) on a frame: too few rows, one value far out."""
    suite = [
        gxe.ExpectTableRowCountToBeBetween(min_value=100, meta=set_by("validate.min_rows")),
        gxe.ExpectColumnValuesToBeBetween(column="pixel_max", min_value=0, max_value=255),
        gxe.ExpectColumnValuesToNotBeNull(
            column="size", mostly=0.95, meta=set_by("validate.max_null_share")
        ),
    ]
    success, result = check_frame(frame, suite, "report", tmp_path)
    return ValidationReport(
        success=success,
        dataset_hash="0",
        evaluated=result["statistics"]["evaluated_expectations"],
        checks=[gate_check(r) for r in result["results"]],
        result_path=tmp_path / "result.json",
        docs_index=tmp_path / "docs" / "index.html",
    )


def test_a_failed_gate_names_the_setting_and_the_observed_value(tmp_path: Path) -> None:
    frame = pd.DataFrame({"pixel_max": [10.0] * 89 + [999.0], "size": [1.0] * 90})
    report = gate_report(frame, tmp_path)

    assert not report.success and report.summary() == "1/3 expectations met"
    message = str(refusal(report, "digits"))
    rows, pixels = report.failures
    assert rows == "validate.min_rows: expected at least 100 rows; observed 90 rows"
    assert pixels.startswith("column 'pixel_max': expected values within [0, 255]; observed 1 of")
    assert "999.0" in pixels and "no setting allows this" in pixels
    assert "expect_" not in message, "the report speaks of settings, not of GX's checks"
    assert message.count("validate.min_rows") == 1
    assert f"Full report: {tmp_path / 'result.json'}" in message
    assert len(message.splitlines()) == 4, message  # the verdict, two failures, the report path


def test_the_passing_checks_are_reported_too(tmp_path: Path) -> None:
    frame = pd.DataFrame({"pixel_max": [10.0] * 120, "size": [1.0] * 114 + [None] * 6})
    report = gate_report(frame, tmp_path)

    assert report.success and report.failures == []
    nulls = next(check for check in report.checks if check.column == "size")
    assert nulls.passed and nulls.setting == "validate.max_null_share"
    assert nulls.rule == "at most 5% missing values" and nulls.observed == "6 of 120 rows fail"
    table = gate_summary_rows(report)
    assert [row["passed"] for row in table] == [True, True, True]
    assert {"expectation", "rule", "observed", "setting"} <= set(table[0])


def test_the_gate_summary_key_is_one_prefect_accepts() -> None:
    assert gate_summary_key(PipelineSettings(name="breast_cancer_svm")) == (
        "breast-cancer-svm-validation"
    )


@pytest.mark.parametrize(
    ("params", "command"),
    [
        ("params.yaml", "make serve"),
        ("./params.yaml", "make serve"),
        ("configs/breast_cancer_svm.yaml", "make serve PARAMS=configs/breast_cancer_svm.yaml"),
        ("my params.yaml", "make serve PARAMS='my params.yaml'"),
    ],
)
def test_the_closing_line_says_how_to_serve_this_params_file(params: str, command: str) -> None:
    assert serve_command(params) == command
