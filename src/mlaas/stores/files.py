"""Reading and writing what stages hand on: parquet tables and JSON records."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from mlaas.core.errors import NotReady


def write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_table(path: Path, stage: str) -> pa.Table:
    """Read a stage's input table, or say which stage has to run first."""
    if not path.is_file():
        raise NotReady(f"{path} does not exist: run the `{stage}` stage first")
    return pq.read_table(path)


def write_json(data: BaseModel | dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise NotReady(f"{path} does not exist: run the `{stage}` stage first")
    return json.loads(path.read_text())
