"""`mlaas compare`: every model trained on one data set, test metrics side by side, from the
tracking store, each with its 95% confidence interval where it has one, and each version marked
with the registry's aliases that point at it (champion, challenger, any set by hand)."""

from __future__ import annotations

from dataclasses import dataclass

from mlaas.core.confidence import CONFIDENCE, interval_of, is_bound
from mlaas.stores.model_registry import CHALLENGER, CHAMPION, ModelRegistry
from mlaas.stores.registry import MlflowRegistry
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace

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
    aliases: tuple[str, ...]
    """The registry's aliases of this run's version: champion first, then challenger."""
    metrics: dict[str, float]
    run_id: str

    @property
    def champion(self) -> bool:
        return CHAMPION in self.aliases


def alias_order(alias: str) -> tuple[int, str]:
    """champion, challenger, then any other alias alphabetically."""
    known = (CHAMPION, CHALLENGER)
    return (known.index(alias) if alias in known else len(known), alias)


def aliases_by_run(registry: ModelRegistry, pipeline: str) -> dict[str, tuple[str, ...]]:
    """Each run of the pipeline's registered model that an alias points at, with its aliases."""
    if not registry.has_model(pipeline):
        return {}  # trained and evaluated, never registered
    found: dict[str, list[str]] = {}
    for alias in registry.aliases(pipeline):
        version = registry.version_with_alias(pipeline, alias)
        if version is not None:
            found.setdefault(version.run_id, []).append(alias)
    return {run: tuple(sorted(names, key=alias_order)) for run, names in found.items()}


def runs_for_dataset(workspace: Workspace, dataset: str) -> list[Row]:
    """Every evaluated run tagged with this data set, newest first."""
    runs = Tracker(workspace).runs_tagged("mlaas.dataset", dataset)
    if not runs:
        return []
    registry = MlflowRegistry(workspace)
    aliases: dict[str, dict[str, tuple[str, ...]]] = {}
    rows = []
    for run in runs:
        metrics = {k: v for k, v in run.metrics.items() if k.startswith(("test_", "cv_"))}
        if not metrics:
            continue  # trained but never evaluated (a failed or interrupted run)
        pipeline = run.tags.get("mlaas.pipeline", "?")
        if pipeline not in aliases:
            aliases[pipeline] = aliases_by_run(registry, pipeline)
        rows.append(
            Row(
                pipeline=pipeline,
                model=run.tags.get("mlaas.model", "?"),
                version=run.tags.get("mlaas.version", "-"),
                aliases=aliases[pipeline].get(run.run_id, ()),
                metrics=metrics,
                run_id=run.run_id,
            )
        )
    return rows


def format_cell(metrics: dict[str, float], name: str) -> str:
    """`0.9760 [0.9581, 0.9867]`: the figure and its 95% confidence interval, where it has one."""
    if name not in metrics:
        return ""
    interval = interval_of(metrics, name)
    figure = f"{metrics[name]:.4f}"
    return figure if interval is None else f"{figure} [{interval.low:.4f}, {interval.high:.4f}]"


def format_table(rows: list[Row]) -> str:
    present = {name for row in rows for name in row.metrics if not is_bound(name)}
    names = [name for name in METRIC_ORDER if name in present]
    header = ["pipeline", "model", "version", *names]
    lines = [
        [
            row.pipeline,
            row.model,
            " ".join([f"v{row.version}", *row.aliases]),
            *(format_cell(row.metrics, n) for n in names),
        ]
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]

    def render(cells: list[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))

    table = [render(header), render(["-" * w for w in widths]), *map(render, lines)]
    if any(interval_of(row.metrics, name) for row in rows for name in names):
        table.append(f"[low, high]: the {CONFIDENCE:.0%} confidence interval on the test split")
    return "\n".join(table)
