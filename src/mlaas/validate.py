"""Stage `validate`: the Great Expectations gate. A data set that fails it stops the pipeline.

The suite follows from the data's schema (the family writes it) and, for later data sets of a
pipeline, from the reference profile the first accepted data set left (learned ranges and
category sets). The result is written as JSON under the pipeline's `validation/` folder, and a
failure also as Data Docs HTML, so it can be read, not only seen.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations import Expectation

from mlaas.errors import ValidationFailed
from mlaas.families import get_family
from mlaas.records import DatasetInfo, ValidationReport
from mlaas.settings import LoadSettings, PipelineSettings, ValidateSettings
from mlaas.storage import read_json, read_table, write_json
from mlaas.workspace import Workspace

DOCS_SITE = "mlaas"


def describe_failure(result: dict[str, Any]) -> str:
    """One line a person can act on: which expectation, on which column, what was seen."""
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("batch_id", "result_format")}
    column = kwargs.pop("column", None)
    observed = result.get("result", {})
    where = f" on column {column!r}" if column else ""
    if "unexpected_count" in observed:
        seen = (
            f"{observed['unexpected_count']} of {observed.get('element_count', '?')} rows fail,"
            f" e.g. {observed.get('partial_unexpected_list', [])[:5]}"
        )
    else:
        seen = f"observed {observed.get('observed_value')!r}"
    return f"{config['type']}{where} with {kwargs}: {seen}"


def check_frame(
    frame: pd.DataFrame, expectations: list[Expectation], suite_name: str, report_dir: Path
) -> tuple[bool, dict[str, Any]]:
    """Run the suite on the frame in an ephemeral GX context; on failure, also build Data Docs
    in report_dir (rendering them costs more than validating a small data set)."""
    docs = report_dir / "docs"
    shutil.rmtree(docs, ignore_errors=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("pipeline")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("whole")
    )
    # The suite is made whole: adding expectations one by one re-serialises it each time.
    # Copies: adding an expectation to a suite binds it, and the caller's list stays its own.
    suite = context.suites.add(
        gx.ExpectationSuite(
            name=suite_name, expectations=[e.copy(update={"id": None}) for e in expectations]
        )
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    if not result.success:
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs),
                },
            },
        )
        context.build_data_docs(site_names=[DOCS_SITE])
    return bool(result.success), result.to_json_dict()


def run(
    pipeline: PipelineSettings,
    load: LoadSettings,
    cfg: ValidateSettings,
    workspace: Workspace,
    dataset: DatasetInfo,
) -> ValidationReport:
    paths = workspace.pipeline(pipeline.name)
    family = get_family(pipeline.family)
    frame = family.validation_frame(read_table(dataset.path, "load"), load)
    reference = (
        read_json(paths.reference_profile, "validate")
        if paths.reference_profile.is_file()
        else None
    )
    success, result = check_frame(
        frame,
        family.expectations(frame, load, cfg, reference),
        suite_name=f"{pipeline.name}-{dataset.dataset}",
        report_dir=paths.validation_dir,
    )
    paths.validation_dir.mkdir(parents=True, exist_ok=True)
    paths.validation_result.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report = ValidationReport(
        success=success,
        dataset_hash=dataset.content_hash,
        evaluated=result["statistics"]["evaluated_expectations"],
        failures=[describe_failure(r) for r in result["results"] if not r["success"]],
        result_path=paths.validation_result,
        docs_index=None if success else paths.validation_dir / "docs" / "index.html",
    )
    write_json(report, paths.validation_summary)
    if success and reference is None:
        # The first data set that passes sets what later ones are held to (ranges, sets).
        write_json(family.reference_profile(frame, load), paths.reference_profile)
    if not success:
        raise ValidationFailed(
            f"data set {dataset.dataset!r} failed the validation gate "
            f"({report.summary()}); nothing was trained or registered.\n  "
            + "\n  ".join(report.failures)
            + f"\nReport: {report.result_path}\nData Docs: {report.docs_index}"
        )
    return report
