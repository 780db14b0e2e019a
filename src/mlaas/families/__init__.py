"""Model families by name: the only place that knows which families exist.

Each family is declared here by an outline (its models and the tasks they do, its shipped data
sets, what the user's own data must hold) that imports nothing heavy, so `mlaas run` checks the
settings against it in a fraction of a second, before Prefect, MLflow or torch are imported.
The family's implementation (loaders, suite, networks) is imported when a stage first needs it.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mlaas.core.errors import SettingsError
from mlaas.families.user_files import TABLE_SUFFIXES

if TYPE_CHECKING:
    from mlaas.core.settings import LoadSettings, Settings
    from mlaas.families.base import Family, TaskName

# A header longer than this is not a header: the file is binary, or one endless line.
HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class OwnData:
    """What `load.path` must be for a family, and which `load` keys name columns of it."""

    kind: Literal["table", "image folder"]
    described: str
    """What to point `load.path` at, in the words of an error message."""
    columns: Mapping[str, str] = field(default_factory=dict)
    """Each `load` key that must name a column of the file, and what that column holds."""
    more_columns: tuple[str, ...] = ()
    """`load` keys that, when set, list further columns the file must have."""
    task: TaskName | None = None
    """The task of any data of this family; None: `load.task`, else inferred from the data."""


@dataclass(frozen=True)
class FamilyOutline:
    """A family as the settings see it: names, tasks and data, without its libraries."""

    name: str
    models: Mapping[str, tuple[TaskName, ...]]
    """Each `train.model.name` the family offers, and the tasks it does."""
    sources: Mapping[str, TaskName]
    """Each data set it ships (`load.source`), and its task."""
    own_data: OwnData
    implementation: Callable[[], Family]


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


BOTH_TASKS: tuple[TaskName, ...] = ("classification", "regression")
OUTLINES: dict[str, FamilyOutline] = {
    outline.name: outline
    for outline in (
        FamilyOutline(
            name="image",
            models={"cnn": ("classification",)},
            sources=dict.fromkeys(("mnist", "fashion_mnist", "digits"), "classification"),
            own_data=OwnData("image folder", "a folder of class_name/ image folders", {}),
            implementation=_image,
        ),
        FamilyOutline(
            name="tabular",
            models={
                "logistic_regression": ("classification",),
                "svm": BOTH_TASKS,
                "gradient_boosting": BOTH_TASKS,
                "ridge": ("regression",),
                "mlp": BOTH_TASKS,
            },
            sources={
                "breast_cancer": "classification",
                "wine": "classification",
                "diabetes": "regression",
            },
            own_data=OwnData(
                "table",
                "your CSV or parquet file",
                {"target": "the column to predict"},
                more_columns=("features",),
            ),
            implementation=_tabular,
        ),
        FamilyOutline(
            name="text",
            models=dict.fromkeys(("tfidf_linear", "transformer", "minilm"), ("classification",)),
            sources=dict.fromkeys(("rotten_tomatoes", "bbc_news"), "classification"),
            own_data=OwnData(
                "table",
                "a CSV of text and label columns",
                {"text_column": "the text", "target": "the label"},
                task="classification",
            ),
            implementation=_text,
        ),
        FamilyOutline(
            name="recommendation",
            models={"matrix_factorization": ("rating",)},
            sources={"movielens_100k": "rating"},
            own_data=OwnData(
                "table",
                "a CSV of user, item and rating",
                {
                    "user_column": "the user ids",
                    "item_column": "the item ids",
                    "target": "the rating",
                },
                task="rating",
            ),
            implementation=_recommendation,
        ),
    )
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
    return outline_of(name).implementation()


def check_settings(settings: Settings) -> None:
    """Refuse, before any work, a family, data source, model, path or column that cannot run.

    Reads no more than the header of the user's file, and imports none of the families."""
    outline = outline_of(settings.pipeline.family)
    load, model = settings.load, settings.train.model
    if model.name not in outline.models:
        raise SettingsError(
            f"train.model.name: the {outline.name} family has no model {model.name!r}; "
            f"choose one of {list(outline.models)}"
        )
    if load.source is not None and load.source not in outline.sources:
        raise SettingsError(
            f"load.source: the {outline.name} family ships no data set {load.source!r}; choose "
            f"one of {sorted(outline.sources)}, or set load.path to {outline.own_data.described}"
        )
    _check_model_does_the_task(outline, settings)
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
        offered = [name for name, tasks in outline.models.items() if task in tasks]
        raise SettingsError(
            f"train.model.name: {model.name!r} does not do {task} ({of_what} is {task}); "
            f"{outline.name} {task} offers {', '.join(offered)}"
        )


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


__all__ = ["OUTLINES", "FamilyOutline", "OwnData", "check_settings", "get_family", "outline_of"]
