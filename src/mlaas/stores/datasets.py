"""Uploaded data sets: each file stored once, by its content hash, under `$MLAAS_HOME/datasets/`.

    datasets/ID.csv | ID.parquet   the bytes as uploaded
    datasets/ID.json               its record: id, sha256, format, rows, columns and their types

The uploader's file name is kept as a label only; it never becomes part of a path, so no name
(`../../etc/passwd`, an absolute path) can place a file outside the folder. A file is parsed as
a table before anything is written: what is not a CSV or parquet table is refused whole.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlaas.core.errors import DataError, NotFound, SettingsError, TooLarge
from mlaas.core.settings import DATASET_ID, Settings
from mlaas.stores.files import write_whole
from mlaas.stores.registry import naming_the_store
from mlaas.stores.tracking_server import is_tracking_server
from mlaas.stores.workspace import Workspace

Format = Literal["csv", "parquet"]
PARQUET_MAGIC = b"PAR1"
ID_LENGTH = 16
ID_PATTERN = re.compile(DATASET_ID)


class ColumnInfo(BaseModel):
    name: str
    type: Literal["integer", "number", "boolean", "string", "datetime"]


class DatasetRecord(BaseModel):
    """What `POST /datasets` answers, and what a pipeline's `load.dataset` refers to."""

    model_config = ConfigDict(frozen=True)

    id: str
    sha256: str
    format: Format
    filename: str
    """The uploader's name for it: a label, never a path."""
    size_bytes: int
    rows: int
    columns: list[ColumnInfo]
    uploaded_at: str


def dataset_id(sha256: str) -> str:
    return sha256[:ID_LENGTH]


def format_of(content: bytes, filename: str, media_type: str) -> Format:
    """Parquet by its magic bytes; otherwise CSV (the only other table format taken)."""
    if content[:4] == PARQUET_MAGIC and content[-4:] == PARQUET_MAGIC:
        return "parquet"
    if filename.lower().endswith(".parquet") or "parquet" in media_type:
        raise DataError("the file is named or typed parquet but is not a parquet file")
    return "csv"


def read_upload(content: bytes, file_format: Format) -> pd.DataFrame:
    """The upload as a table, or a DataError saying why it is not one."""
    if not content:
        raise DataError("the upload is empty: send a CSV or parquet file with a header and rows")
    try:
        if file_format == "parquet":
            frame = pd.read_parquet(io.BytesIO(content))
        else:
            # Strict UTF-8 first: a binary file (an image, an archive) is refused here instead
            # of being read as one strange column.
            text = content.decode("utf-8")
            frame = pd.read_csv(io.StringIO(text))
    except UnicodeDecodeError:
        raise DataError(
            "the upload is neither a parquet file nor UTF-8 text (CSV): send a table"
        ) from None
    except (ValueError, pd.errors.ParserError, OSError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"the upload is not a readable {file_format} table: {first_line}") from None
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise DataError(
            f"the upload holds {frame.shape[0]} rows and {frame.shape[1]} columns: a table needs "
            "a header line and at least one row"
        )
    if any(str(name).startswith("Unnamed: ") for name in frame.columns):
        raise DataError("the upload has a column without a name: give every column a header")
    return frame


def column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "integer"
    if pd.api.types.is_numeric_dtype(series):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    return "string"


def safe_label(filename: str) -> str:
    """The uploader's file name as a label: its last component, printable, at most 200 chars."""
    last = re.split(r"[\\/]", filename)[-1]
    cleaned = "".join(ch for ch in last if ch.isprintable()).strip()
    return cleaned[:200] or "upload"


# Where team mode keeps the uploads, in the tracking server's proxied artifact store.
SHARED_FOLDER = "mlflow-artifacts:/mlaas-datasets"


class DatasetStore:
    """The content-addressed folder of uploads of one workspace. With a tracking server (team
    mode) each upload is kept in its artifact store too, and a workspace on another machine
    that lacks one fetches it from there (`local_file`)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.folder = workspace.datasets_dir
        store = workspace.store_uri
        self.shared = SHARED_FOLDER if store and is_tracking_server(store) else None

    def add(self, content: bytes, filename: str, media_type: str, max_bytes: int) -> DatasetRecord:
        """Store an upload once (the same bytes again return the same record)."""
        if len(content) > max_bytes:
            raise TooLarge(
                f"the upload is {len(content)} bytes, over the limit of {max_bytes} bytes "
                "(`mlaas up --max-upload-bytes N`)"
            )
        file_format = format_of(content, filename, media_type)
        frame = read_upload(content, file_format)
        sha256 = hashlib.sha256(content).hexdigest()
        record = DatasetRecord(
            id=dataset_id(sha256),
            sha256=sha256,
            format=file_format,
            filename=safe_label(filename),
            size_bytes=len(content),
            rows=int(frame.shape[0]),
            columns=[ColumnInfo(name=str(n), type=column_type(frame[n])) for n in frame.columns],
            uploaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        existing = self.find(record.id)
        if existing is not None:
            return existing
        if self.shared is not None:
            # Shared first: an upload the server did not take is not kept here either, and
            # the same bytes sent again are shared then.
            self._share(record, content)
        self._keep(record, content)
        return record

    def _keep(self, record: DatasetRecord, content: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # The data first, the record last, each written whole and renamed into place: a record
        # always names a complete file.
        write_whole(self.data_path(record), content)
        write_whole(self._record_path(record.id), record.model_dump_json(indent=2).encode())

    def _share(self, record: DatasetRecord, content: bytes) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with tempfile.TemporaryDirectory() as folder:
            staged = Path(folder)
            (staged / self.data_path(record).name).write_bytes(content)
            (staged / self._record_path(record.id).name).write_text(record.model_dump_json())
            with naming_the_store(self.workspace, f"could not keep upload {record.id}"):
                get_artifact_repository(str(self.shared)).log_artifacts(folder)

    def local_file(self, dataset: str) -> Path:
        """The file of uploaded data set `dataset` in this workspace: fetched from the shared
        store first when it was uploaded on another machine (and checked against its hash)."""
        record = self.find(dataset)
        if record is None and self.shared is not None:
            record = self._fetch(dataset)
        if record is None:
            raise SettingsError(
                f"load.dataset: no uploaded data set {dataset!r}; upload it with POST /datasets "
                "and give the id it answers"
            )
        return self.data_path(record)

    def _fetch(self, dataset: str) -> DatasetRecord | None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        shared = get_artifact_repository(str(self.shared))
        with (
            naming_the_store(self.workspace, f"could not give uploaded data set {dataset}"),
            tempfile.TemporaryDirectory() as folder,
        ):
            if f"{dataset}.json" not in {Path(f.path).name for f in shared.list_artifacts()}:
                return None
            record = DatasetRecord.model_validate_json(
                Path(shared.download_artifacts(f"{dataset}.json", folder)).read_text()
            )
            data = Path(shared.download_artifacts(self.data_path(record).name, folder))
            content = data.read_bytes()
        if hashlib.sha256(content).hexdigest() != record.sha256:
            raise DataError(
                f"load.dataset: the shared copy of {dataset} does not match its hash: "
                "upload the file again"
            )
        self._keep(record, content)
        return record

    def data_path(self, record: DatasetRecord) -> Path:
        return self.folder / f"{record.id}.{record.format}"

    def _record_path(self, dataset: str) -> Path:
        return self.folder / f"{dataset}.json"

    def find(self, dataset: str) -> DatasetRecord | None:
        if not ID_PATTERN.match(dataset):
            return None
        try:
            return DatasetRecord.model_validate_json(self._record_path(dataset).read_text())
        except FileNotFoundError:
            return None

    def get(self, dataset: str) -> DatasetRecord:
        record = self.find(dataset)
        if record is None:
            raise NotFound(
                f"no uploaded data set {dataset!r}: upload one with POST /datasets and use "
                "the id it answers"
            )
        return record

    def all(self) -> list[DatasetRecord]:
        if not self.folder.is_dir():
            return []
        found = (self.find(path.stem) for path in sorted(self.folder.glob("*.json")))
        return [record for record in found if record is not None]


def with_local_data(settings: Settings, workspace: Workspace) -> Settings:
    """`settings` with an uploaded data set (`load.dataset`) as the file it is in this
    workspace (`load.path`), fetched first if it was uploaded on another machine: what the
    stages read. Other settings are returned as they are."""
    load = settings.load
    if load.dataset is None:
        return settings
    local = DatasetStore(workspace).local_file(load.dataset)
    return settings.model_copy(
        update={"load": load.model_copy(update={"path": local, "dataset": None})}
    )
