"""The validation gate's summary as a Prefect table artifact of the run that checked it."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact

from mlaas.core.records import ValidationReport, artifact_key
from mlaas.core.settings import PipelineSettings


def gate_summary_key(pipeline: PipelineSettings) -> str:
    """The Prefect artifact key of a pipeline's gate summary."""
    return artifact_key(pipeline.name, "validation")


def gate_summary_rows(report: ValidationReport) -> list[dict[str, Any]]:
    """The gate's checks as the rows of a table: each expectation, its rule, what was seen."""
    return [
        {
            "passed": check.passed,
            "expectation": check.expectation,
            "column": check.column or "",
            "rule": check.rule,
            "observed": check.observed,
            "setting": check.setting or "",
        }
        for check in report.checks
    ]


def publish_gate_summary(pipeline: PipelineSettings, report: ValidationReport) -> None:
    """The gate's summary as a Prefect table artifact of this run, passed or failed (and also
    when the validate task's result came from the cache)."""
    verdict = "passed" if report.success else "FAILED"
    create_table_artifact(
        key=gate_summary_key(pipeline),
        table=gate_summary_rows(report),
        description=(
            f"Validation gate {verdict}: {report.summary()}. Full report: {report.result_path}"
        ),
    )
