"""`mlaas compare`: every model trained on one data set, test metrics side by side, from the
tracking store, with each pipeline's current champion marked."""

from __future__ import annotations

from dataclasses import dataclass

from mlaas.registry import CHAMPION, Registry
from mlaas.workspace import Workspace

# The fixed metric names, in the order a table shows them (whichever a data set has).
METRIC_ORDER = (
    "test_accuracy",
    "test_f1_macro",
    "test_rmse",
    "test_mae",
    "test_r2",
    "cv_rmse",
    "cv_mae",
    "cv_accuracy",
    "test_precision_at_10",
    "test_recall_at_10",
)


@dataclass(frozen=True)
class Row:
    pipeline: str
    model: str
    version: str
    champion: bool
    metrics: dict[str, float]
    run_id: str


def runs_for_dataset(workspace: Workspace, dataset: str) -> list[Row]:
    """Every evaluated run tagged with this data set, newest first."""
    registry = Registry(workspace)
    client = registry.client
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`mlaas.dataset` = '{dataset}'",
        order_by=["attributes.start_time DESC"],
    )
    champions: dict[str, str | None] = {}
    rows = []
    for run in runs:
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(("test_", "cv_"))}
        if not metrics:
            continue  # trained but never evaluated (a failed or interrupted run)
        pipeline = run.data.tags.get("mlaas.pipeline", "?")
        if pipeline not in champions:
            champion = registry.version_with_alias(pipeline, CHAMPION)
            champions[pipeline] = champion.run_id if champion else None
        rows.append(
            Row(
                pipeline=pipeline,
                model=run.data.tags.get("mlaas.model", "?"),
                version=run.data.tags.get("mlaas.version", "-"),
                champion=champions[pipeline] == run.info.run_id,
                metrics=metrics,
                run_id=run.info.run_id,
            )
        )
    return rows


def format_table(rows: list[Row]) -> str:
    present = {name for row in rows for name in row.metrics}
    names = [name for name in METRIC_ORDER if name in present]
    header = ["pipeline", "model", "version", *names]
    lines = [
        [
            row.pipeline,
            row.model,
            f"v{row.version}{' champion' if row.champion else ''}",
            *(f"{row.metrics[n]:.4f}" if n in row.metrics else "" for n in names),
        ]
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells: list[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines)])
