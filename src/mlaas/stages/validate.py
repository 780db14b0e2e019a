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

from mlaas.core.errors import ValidationFailed
from mlaas.core.records import DatasetInfo, GateCheck, ValidationReport
from mlaas.families.base import SETTING_META
from mlaas.stages.context import StageContext
from mlaas.stores.files import read_json, read_table, write_json

DOCS_SITE = "mlaas"


EXAMPLES = 5
"""Failing values quoted per check: enough to recognise the problem, short enough to read."""


def gate_check(result: dict[str, Any]) -> GateCheck:
    """One expectation's outcome in a person's words: the rule, what was seen, its setting."""
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k not in ("batch_id", "result_format")}
    observed = result.get("result") or {}
    if "unexpected_count" in observed:
        seen = f"{observed['unexpected_count']} of {observed.get('element_count', '?')} rows fail"
        examples = observed.get("partial_unexpected_list", [])[:EXAMPLES]
        seen += f", e.g. {_short(examples)}" if examples and not result["success"] else ""
    elif config["type"] == ROW_COUNT:
        seen = f"{observed.get('observed_value')} rows"
    else:
        seen = _short(observed.get("observed_value"))
    return GateCheck(
        expectation=config["type"],
        column=kwargs.get("column"),
        rule=describe_rule(config["type"], kwargs),
        observed=seen,
        passed=bool(result["success"]),
        setting=(config.get("meta") or {}).get(SETTING_META),
    )


ROW_COUNT = "expect_table_row_count_to_be_between"


def describe_rule(expectation: str, kwargs: dict[str, Any]) -> str:
    """What an expectation demands, in words (the kinds the families' suites use)."""
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        bounds = f"within [{_number(low)}, {_number(high)}]"
    else:
        bounds = f"at least {_number(low)}" if low is not None else f"at most {_number(high)}"
    given = kwargs.get("mostly")
    mostly = 1.0 if given is None else float(given)  # the share of rows that must keep the rule
    allowed = f"{round((1 - mostly) * 100, 6):g}%" if mostly < 1 else None
    most_rows = f" in at least {round(mostly * 100, 6):g}% of rows" if allowed else ""
    rules = {
        ROW_COUNT: f"{bounds} rows",
        "expect_column_to_exist": "the column to exist",
        "expect_column_values_to_not_be_null": (
            f"at most {allowed} missing values" if allowed else "no missing values"
        ),
        "expect_column_values_to_be_between": f"values {bounds}{most_rows}",
        "expect_column_values_to_be_in_set": (
            f"values in {_short(kwargs.get('value_set'))}{most_rows}"
        ),
        "expect_column_distinct_values_to_equal_set": (
            f"exactly the values {_short(kwargs.get('value_set'))}"
        ),
        "expect_compound_columns_to_be_unique": (
            f"{f'at most {allowed}' if allowed else 'no'} repeated rows over "
            f"{kwargs.get('column_list')}"
        ),
        "expect_column_values_to_be_in_type_list": (
            f"values of the types {_short(kwargs.get('type_list'), 60)}"
        ),
    }
    return rules.get(expectation, f"{expectation} with {_short(kwargs)}")


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refusal(report: ValidationReport, dataset: str) -> ValidationFailed:
    """The gate's failure as one short report: each failed check, then where the full one is."""
    docs = f" (Data Docs: {report.docs_index})" if report.docs_index else ""
    return ValidationFailed(
        f"data set {dataset!r} failed the validation gate ({report.summary()}); nothing was "
        "trained or registered.\n  "
        + "\n  ".join(report.failures)
        + f"\nFull report: {report.result_path}{docs}"
    )


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


def widened(reference: Any, extra: Any) -> Any:
    """A reference profile that also admits `extra`'s: ranges reach its minimum and maximum,
    sets and class lists take its values too; everything else stays the reference's."""
    if isinstance(reference, dict) and isinstance(extra, dict):
        merged = dict(reference)
        for key, value in extra.items():
            if key not in reference:
                continue  # a column or key the first data set lacks: not the gate's to learn
            if key == "min":
                merged[key] = min(reference[key], value)
            elif key == "max":
                merged[key] = max(reference[key], value)
            elif key in ("values", "classes") and isinstance(value, list):
                known = list(reference[key])
                merged[key] = known + [v for v in value if v not in known]
            else:
                merged[key] = widened(reference[key], value)
        return merged
    return reference


def check(ctx: StageContext, dataset: DatasetInfo) -> ValidationReport:
    """Run the gate and write its report; a failed gate is a report too, not an error."""
    paths, family, load = ctx.paths, ctx.family, ctx.settings.load
    frame = family.validation_frame(read_table(dataset.path, "load"), load)
    reference = (
        read_json(paths.reference_profile, "validate")
        if paths.reference_profile.is_file()
        else None
    )
    if reference is not None and load.extra_rows is not None:
        # Labelled production rows (a retraining on drift): what the endpoint was sent and people
        # labelled is the world as it now is, so the learned ranges and sets widen to take them
        # for this run. The data source's own rows are still held to the first data set's.
        extra = family.validation_frame(read_table(load.extra_rows, "load"), load)
        reference = widened(reference, family.reference_profile(extra, load))
    success, result = check_frame(
        frame,
        family.expectations(frame, load, ctx.settings.validate_, reference),
        suite_name=f"{ctx.pipeline.name}-{dataset.dataset}",
        report_dir=paths.validation_dir,
    )
    paths.validation_dir.mkdir(parents=True, exist_ok=True)
    paths.validation_result.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report = ValidationReport(
        success=success,
        dataset_hash=dataset.content_hash,
        evaluated=result["statistics"]["evaluated_expectations"],
        checks=[gate_check(r) for r in result["results"]],
        result_path=paths.validation_result,
        docs_index=None if success else paths.validation_dir / "docs" / "index.html",
    )
    write_json(report, paths.validation_summary)
    if success and reference is None:
        # The first data set that passes sets what later ones are held to (ranges, sets).
        write_json(family.reference_profile(frame, load), paths.reference_profile)
    return report


def run(ctx: StageContext, dataset: DatasetInfo) -> ValidationReport:
    """The stage: the gate's report, or ValidationFailed when the data set failed it."""
    report = check(ctx, dataset)
    if not report.success:
        raise refusal(report, dataset.dataset)
    return report
