"""Model families by name: the only place that knows which families exist.

Each family is listed here by its outline (`outlines`: its models and the tasks they do, its
shipped data sets, what the user's own data must hold), which imports nothing heavy, so `mlaas
run` checks the settings against it in a fraction of a second, before Prefect, MLflow or torch
are imported. The family's implementation (loaders, suite, networks) is imported when a stage
first needs it.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mlaas.core.errors import SettingsError
from mlaas.core.trial_settings import searched_keys
from mlaas.families.outlines import (
    IMAGE_OUTLINE,
    RECOMMENDATION_OUTLINE,
    TABULAR_OUTLINE,
    TEXT_OUTLINE,
    FamilyOutline,
    ModelOutline,
    OwnData,
)
from mlaas.families.user_files import TABLE_SUFFIXES

if TYPE_CHECKING:
    from mlaas.core.settings import LoadSettings, Settings
    from mlaas.families.base import Family

# A header longer than this is not a header: the file is binary, or one endless line.
HEADER_BYTES = 1024 * 1024


def _image() -> Family:
    from mlaas.families.image import ImageFamily

    return ImageFamily()


def _tabular() -> Family:
    from mlaas.families.tabular import TabularFamily

    return TabularFamily()


def _text() -> Family:
    from mlaas.families.text import TextFamily

    return TextFamily()


def _recommendation() -> Family:
    from mlaas.families.recommendation import RecommendationFamily

    return RecommendationFamily()


_FAMILIES: tuple[tuple[FamilyOutline, Callable[[], Family]], ...] = (
    (IMAGE_OUTLINE, _image),
    (TABULAR_OUTLINE, _tabular),
    (TEXT_OUTLINE, _text),
    (RECOMMENDATION_OUTLINE, _recommendation),
)
OUTLINES: dict[str, FamilyOutline] = {outline.name: outline for outline, _ in _FAMILIES}
_IMPLEMENTATIONS: dict[str, Callable[[], Family]] = {
    outline.name: implementation for outline, implementation in _FAMILIES
}


def outline_of(name: str) -> FamilyOutline:
    if name not in OUTLINES:
        raise SettingsError(
            f"pipeline.family: unknown family {name!r}; choose one of {sorted(OUTLINES)}"
        )
    return OUTLINES[name]


@functools.cache
def get_family(name: str) -> Family:
    """The family's implementation (imported on first use: it pulls in torch)."""
    return _IMPLEMENTATIONS[outline_of(name).name]()


def check_settings(settings: Settings) -> None:
    """Refuse, before any work, a family, data source, model, path or column that cannot run.

    Reads no more than the header of the user's file, and imports none of the families."""
    outline = outline_of(settings.pipeline.family)
    load, model = settings.load, settings.train.model
    outline.require_model(model)
    if load.source is not None and load.source not in outline.sources:
        raise SettingsError(
            f"load.source: the {outline.name} family ships no data set {load.source!r}; choose "
            f"one of {sorted(outline.sources)}, or set load.path to {outline.own_data.described}"
        )
    _check_model_does_the_task(outline, settings)
    searched_keys(settings)  # a search space the model cannot take fails here, not in a trial
    if load.path is not None:
        _check_own_data(outline.own_data, load)
    for path, key, kind in (
        (settings.package.bentofile, "package.bentofile", "file"),
        (settings.package.build_context, "package.build_context", "folder"),
    ):
        if not (path.is_file() if kind == "file" else path.is_dir()):
            raise SettingsError(
                f"{key}: {path} is not a {kind} (relative paths start at {Path.cwd()})"
            )


def _check_model_does_the_task(outline: FamilyOutline, settings: Settings) -> None:
    load, model = settings.load, settings.train.model
    if load.source is not None:
        task, of_what = outline.sources[load.source], f"load.source {load.source!r}"
    elif outline.own_data.task is not None:
        task, of_what = outline.own_data.task, f"{outline.name} data"
    elif load.task is not None:
        task, of_what = load.task, "load.task"
    else:
        return  # inferred from the data's values when they are loaded
    if task not in outline.models[model.name]:
        raise outline.model_does_not_do(model.name, task, f"{of_what} is {task}")


def _check_own_data(own: OwnData, load: LoadSettings) -> None:
    """`load.path` is the kind of thing the family reads, and has the columns `load` names."""
    path = load.data_path  # a settings error naming the key when it does not exist
    if own.kind == "image folder":
        if not path.is_dir():
            raise SettingsError(f"load.path: {path} is not a folder; point it at {own.described}")
        return
    if not path.is_file():
        raise SettingsError(f"load.path: {path} is not a file; point it at {own.described}")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise SettingsError(
            f"load.path: {path} is a {path.suffix or 'suffix-less'} file; mlaas reads "
            f"{', '.join(TABLE_SUFFIXES)} files: export it as CSV"
        )
    for key, holds in own.columns.items():
        if getattr(load, key) is None:
            raise SettingsError(f"load.{key}: name the column of {path.name} that holds {holds}")
    header = table_header(path)
    if header is None:
        return  # not readable as a table: `load` says what is wrong with the file
    for key in [*own.columns, *own.more_columns]:
        named = getattr(load, key)
        for column in [named] if isinstance(named, str) else named or []:
            if column not in header:
                raise SettingsError(
                    f"load.{key}: column {column!r} is not in {path}; its columns are {header}"
                )


def table_header(path: Path) -> list[str] | None:
    """The column names of a CSV / TSV / parquet file, read from its header alone; None when the
    file cannot be read as a table (empty, binary, not UTF-8)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (OSError, ValueError):
            return None
    with path.open("rb") as handle:
        head = handle.read(HEADER_BYTES)
    line_end = head.find(b"\n")
    if not head.strip() or b"\x00" in head or (line_end < 0 and len(head) == HEADER_BYTES):
        return None
    try:
        first_line = head[: line_end if line_end >= 0 else None].decode("utf-8-sig")
        return next(csv.reader(io.StringIO(first_line), delimiter=_delimiter(path)))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None


def _delimiter(path: Path) -> str:
    """The separator the loader reads the file with (tabs for .tsv, else commas)."""
    return "\t" if path.suffix.lower() == ".tsv" else ","


__all__ = [
    "OUTLINES",
    "FamilyOutline",
    "ModelOutline",
    "OwnData",
    "check_settings",
    "get_family",
    "outline_of",
]
