"""The uploaded data sets' store: content-addressed, parsed before written, never outside its
folder whatever the file is called."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from mlaas.core.errors import DataError, NotFound, TooLarge
from mlaas.stores.datasets import DatasetStore, safe_label
from mlaas.stores.workspace import Workspace

CSV = b"size,colour,price,sold\n1.5,red,3,true\n2.0,blue,4,false\n"


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(Workspace(tmp_path / "home"))


def test_a_csv_is_stored_once_with_its_columns_and_types(store: DatasetStore) -> None:
    record = store.add(CSV, "shop.csv", "text/csv", max_bytes=10_000)
    assert record.rows == 2 and record.format == "csv" and record.filename == "shop.csv"
    assert [(c.name, c.type) for c in record.columns] == [
        ("size", "number"),
        ("colour", "string"),
        ("price", "integer"),
        ("sold", "boolean"),
    ]
    assert store.data_path(record).read_bytes() == CSV
    again = store.add(CSV, "other-name.csv", "text/csv", max_bytes=10_000)
    assert again == record  # the same bytes: the same data set, first name kept
    assert store.get(record.id) == record and store.all() == [record]


def test_a_parquet_file_is_told_by_its_bytes(store: DatasetStore) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}).to_parquet(buffer)
    record = store.add(buffer.getvalue(), "upload.csv", "application/octet-stream", 10**6)
    assert record.format == "parquet" and record.rows == 3
    assert store.data_path(record).suffix == ".parquet"


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..\\..\\win.ini", "a/b/../../../c.csv", ""]
)
def test_no_file_name_places_a_file_outside_the_folder(store: DatasetStore, name: str) -> None:
    record = store.add(CSV, name, "text/csv", max_bytes=10_000)
    written = sorted(path.resolve() for path in store.folder.rglob("*") if path.is_file())
    assert all(path.parent == store.folder.resolve() for path in written)
    assert {path.name for path in written} == {f"{record.id}.csv", f"{record.id}.json"}
    assert "/" not in record.filename and "\\" not in record.filename


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "neither a parquet file nor UTF-8"),
        (b"a,b\n", "0 rows"),
        (b"a,\n1,2\n", "without a name"),
        (b'a,b\n"1,2\n', "not a readable csv"),
    ],
)
def test_what_is_not_a_table_is_refused_and_nothing_written(
    store: DatasetStore, content: bytes, problem: str
) -> None:
    with pytest.raises(DataError, match=problem):
        store.add(content, "x.csv", "text/csv", max_bytes=10_000)
    assert not store.folder.exists() or not any(store.folder.iterdir())


def test_a_file_named_parquet_that_is_not_is_refused(store: DatasetStore) -> None:
    with pytest.raises(DataError, match="not a parquet file"):
        store.add(CSV, "x.parquet", "application/octet-stream", max_bytes=10_000)


def test_an_upload_over_the_limit_is_refused(store: DatasetStore) -> None:
    with pytest.raises(TooLarge, match="over the limit of 10 bytes"):
        store.add(CSV, "x.csv", "text/csv", max_bytes=10)


def test_an_unknown_or_malformed_id_is_not_found(store: DatasetStore) -> None:
    for wrong in ("0123456789abcdef", "../../etc/passwd", "ABC"):
        assert store.find(wrong) is None
        with pytest.raises(NotFound):
            store.get(wrong)


def test_labels_keep_the_last_printable_part_of_a_name() -> None:
    assert safe_label("../../a\x00b.csv") == "ab.csv"
    assert safe_label("") == "upload"


def test_a_pipeline_names_an_upload_by_id_and_its_runs_read_the_file(tmp_path: Path) -> None:
    from mlaas.core.errors import SettingsError
    from mlaas.core.settings import Settings
    from mlaas.stores.datasets import with_local_data

    workspace = Workspace(tmp_path / "home")
    record = DatasetStore(workspace).add(CSV, "shop.csv", "text/csv", max_bytes=10_000)
    document = {
        "pipeline": {"name": "shop", "family": "tabular"},
        "load": {"source": None, "dataset": record.id, "target": "sold"},
        "train": {"model": {"name": "logistic_regression"}},
    }
    settings = Settings.model_validate(document)
    assert settings.load.dataset_name == record.id
    local = with_local_data(settings, workspace)
    assert local.load.path == DatasetStore(workspace).data_path(record)
    assert local.load.dataset is None and local.load.dataset_name == record.id
    assert local.train == settings.train
    shipped = Settings.model_validate({"pipeline": {"name": "w", "family": "tabular"}})
    assert with_local_data(shipped, workspace) is shipped

    # An id no upload has (one machine: no shared store to fetch it from), and both at once.
    unknown = document | {"load": {**document["load"], "dataset": "0" * 16}}
    with pytest.raises(SettingsError, match=r"load\.dataset: no uploaded data set"):
        with_local_data(Settings.model_validate(unknown), workspace)
    both = document | {"load": {**document["load"], "source": "wine"}}
    with pytest.raises(ValueError, match="exactly one of"):
        Settings.model_validate(both)
