"""Stage `split`: stratified, seeded train / validation / test split, written as parquet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sklearn.model_selection import train_test_split

from mlaas.core.errors import ValidationFailed
from mlaas.core.lineage import table_hash
from mlaas.core.records import DatasetInfo, SplitInfo, ValidationReport
from mlaas.core.settings import SplitSettings
from mlaas.core.tasks import TASKS
from mlaas.stages.context import StageContext
from mlaas.stores.files import read_table, write_json, write_table

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    train: pa.Table
    val: pa.Table
    test: pa.Table


def split_table(
    table: pa.Table, target_column: str | None, cfg: SplitSettings, seed: int
) -> Splits:
    """Split rows three ways at random, the same seed giving the same rows; with a target
    column, each part keeps its class proportions (stratified)."""
    labels = table.column(target_column).to_numpy(zero_copy_only=False) if target_column else None
    rows = np.arange(table.num_rows)
    rest, test = train_test_split(rows, test_size=cfg.test_size, stratify=labels, random_state=seed)
    # val_size is a share of the whole table, so rescale it to the share of what is left.
    train, val = train_test_split(
        rest,
        test_size=cfg.val_size / (1.0 - cfg.test_size),
        stratify=labels[rest] if labels is not None else None,
        random_state=seed,
    )
    return Splits(*(table.take(np.sort(part)) for part in (train, val, test)))


def run(ctx: StageContext, dataset: DatasetInfo, validation: ValidationReport) -> SplitInfo:
    if not validation.success or validation.dataset_hash != dataset.content_hash:
        raise ValidationFailed(
            f"data set {dataset.dataset!r} has not passed the validation gate; run `validate` first"
        )
    paths, family, load = ctx.paths, ctx.family, ctx.settings.load
    stratify = TASKS[family.task(load)].stratify
    target = family.target_column(load) if stratify else None
    splits = split_table(
        read_table(dataset.path, "load"), target, ctx.settings.split, ctx.pipeline.seed
    )
    records = {}
    for name in SPLIT_NAMES:
        part: pa.Table = getattr(splits, name)
        write_table(part, paths.split(name))
        records[name] = DatasetInfo(
            path=paths.split(name),
            content_hash=table_hash(part),
            rows=part.num_rows,
            dataset=dataset.dataset,
        )
    info = SplitInfo(**records)
    write_json(info, paths.splits_record)
    return info
