"""Stage `load`: read the data source named in params.yaml into the pipeline's data set."""

from __future__ import annotations

import pyarrow as pa
from sklearn.model_selection import train_test_split

from mlaas.families import get_family
from mlaas.lineage import table_hash
from mlaas.records import DatasetInfo
from mlaas.settings import LoadSettings, PipelineSettings
from mlaas.storage import write_json, write_table
from mlaas.workspace import Workspace


def stratified_sample(table: pa.Table, target_column: str, rows: int, seed: int) -> pa.Table:
    """Keep `rows` rows with the class proportions of the whole table (same seed, same rows)."""
    if rows >= table.num_rows:
        return table
    labels = table.column(target_column).to_numpy(zero_copy_only=False)
    kept, _ = train_test_split(
        range(table.num_rows), train_size=rows, stratify=labels, random_state=seed
    )
    return table.take(sorted(kept))


def load_table(pipeline: PipelineSettings, cfg: LoadSettings) -> pa.Table:
    family = get_family(pipeline.family)
    table = family.load(cfg)
    if cfg.max_rows is not None:
        table = stratified_sample(table, family.target_column, cfg.max_rows, pipeline.seed)
    return table


def run(pipeline: PipelineSettings, cfg: LoadSettings, workspace: Workspace) -> DatasetInfo:
    paths = workspace.pipeline(pipeline.name)
    table = load_table(pipeline, cfg)
    write_table(table, paths.dataset)
    info = DatasetInfo(
        path=paths.dataset,
        content_hash=table_hash(table),
        rows=table.num_rows,
        dataset=get_family(pipeline.family).dataset_name(cfg),
    )
    write_json(info, paths.dataset_info)
    return info
