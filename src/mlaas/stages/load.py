"""Stage `load`: read the data source named in params.yaml into the pipeline's data set."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mlaas.core.errors import SettingsError
from mlaas.core.lineage import table_hash
from mlaas.core.records import DatasetInfo
from mlaas.core.settings import LoadSettings, PipelineSettings
from mlaas.core.tasks import TASKS
from mlaas.families import get_family
from mlaas.stages.context import StageContext
from mlaas.stores.files import read_table, write_json, write_table


def sample_rows(table: pa.Table, target_column: str | None, rows: int, seed: int) -> pa.Table:
    """Keep `rows` rows at random (same seed, same rows); with a target column, keep its
    class proportions too."""
    if rows >= table.num_rows:
        return table
    # scikit-learn (a second of a run that changes nothing) only when there is a sample to draw.
    from sklearn.model_selection import train_test_split

    labels = table.column(target_column).to_numpy(zero_copy_only=False) if target_column else None
    kept, _ = train_test_split(
        range(table.num_rows), train_size=rows, stratify=labels, random_state=seed
    )
    return table.take(sorted(kept))


def load_table(pipeline: PipelineSettings, cfg: LoadSettings) -> pa.Table:
    family = get_family(pipeline.family)
    table = family.load(cfg)
    if cfg.max_rows is not None:
        stratify = TASKS[family.task(cfg)].stratify
        target = family.target_column(cfg) if stratify else None
        table = sample_rows(table, target, cfg.max_rows, pipeline.seed)
    if cfg.extra_rows is not None:
        table = with_extra_rows(table, cfg.extra_rows)
    return table


def with_extra_rows(table: pa.Table, path: Path) -> pa.Table:
    """`table` and the labelled rows in `path` (same layout; columns only one side has are null)."""
    if not path.is_file():
        raise SettingsError(f"load.extra_rows: {path} does not exist")
    extra = read_table(path, "load")
    try:
        combined = pa.concat_tables(
            [table, extra.replace_schema_metadata(table.schema.metadata)],
            promote_options="permissive",
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise SettingsError(
            f"load.extra_rows: {path} does not fit the data's layout "
            f"({', '.join(table.schema.names)}): {error}"
        ) from None
    return combined.replace_schema_metadata(table.schema.metadata)


def run(ctx: StageContext) -> DatasetInfo:
    paths, cfg = ctx.paths, ctx.settings.load
    table = load_table(ctx.pipeline, cfg)
    write_table(table, paths.dataset)
    info = DatasetInfo(
        path=paths.dataset,
        content_hash=table_hash(table),
        rows=table.num_rows,
        dataset=cfg.dataset_name,
    )
    write_json(info, paths.dataset_info)
    return info
