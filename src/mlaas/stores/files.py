"""Reading and writing what stages hand on: parquet tables and JSON records."""

from __future__ import annotations

import json
import os
import tempfile
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


def write_whole(path: Path, content: bytes | str) -> None:
    """Write a file whole, then rename it into place: a reader (a model server polling the
    package record, the API reading a run's outcome) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as output:
            output.write(data)
        os.chmod(partial, 0o644)  # mkstemp's 0600 would hide it from other users of the folder
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def write_json(data: BaseModel | dict, path: Path) -> None:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    write_whole(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise NotReady(f"{path} does not exist: run the `{stage}` stage first")
    return json.loads(path.read_text())
