"""The validation gate against each way a user's data file can be bad.

Every case goes through the real `load` and `validate` stages on a real file in a private
workspace: a file that cannot be read stops `load` with a DataError naming it; data that reads
but is wrong fails the Great Expectations gate with the failing expectations and the report
files; in neither case does anything downstream run. "Out of range", "unseen label" and "missing
column" are relative to the reference profile the first accepted file of a pipeline leaves, so
those cases first load an accepted file, then the bad one. (The flow-level proof that nothing is
trained or registered is in test_validation_gate_flow.py.)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlaas.core.errors import DataError, MlaasError, SettingsError, ValidationFailed
from mlaas.core.settings import Settings
from mlaas.stages.table import run_stage
from mlaas.stores.workspace import Workspace

ROWS = 120
MODELS = {
    "tabular": "logistic_regression",
    "text": "tfidf_linear",
    "recommendation": "matrix_factorization",
}
LOAD = {
    "tabular": {"target": "label"},
    "text": {"text_column": "review", "target": "sentiment"},
    "recommendation": {"user_column": "user", "item_column": "item", "target": "stars"},
}


def tabular(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    size = rng.normal(50, 10, rows).round(2)
    return pd.DataFrame(
        {
            "size": size,
            "colour": rng.choice(["red", "green", "blue"], rows),
            "label": np.where(size > 50, "yes", "no"),
        }
    )


def text(rows: int = ROWS) -> pd.DataFrame:
    positive = np.arange(rows) % 2 == 0
    return pd.DataFrame(
        {
            "review": [
                f"{'a fine, warm film' if good else 'a dull, cold film'} number {row}"
                for row, good in enumerate(positive)
            ],
            "sentiment": np.where(positive, "pos", "neg"),
        }
    )


def ratings(rows: int = 150) -> pd.DataFrame:
    pairs = [(f"u{user}", f"i{item}") for user in range(30) for item in range(20)][:rows]
    return pd.DataFrame(
        {
            "user": [user for user, _ in pairs],
            "item": [item for _, item in pairs],
            "stars": [1 + (index * 7) % 5 for index in range(rows)],
        }
    )


GOOD = {"tabular": tabular, "text": text, "recommendation": ratings}


def changed(frame: pd.DataFrame, column: str, rows: slice, value: Any) -> pd.DataFrame:
    copy = frame.astype({column: object}).copy()
    copy.loc[copy.index[rows], column] = value
    return copy


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), color=128).save(buffer, format="PNG")
    return buffer.getvalue()


Content = pd.DataFrame | bytes


@dataclass(frozen=True)
class Case:
    family: str
    bad: Callable[[], Content]
    error: type[MlaasError]
    message: tuple[str, ...]
    """What the message must name: the setting or column and the rule broken, or the problem."""
    file_name: str = "data.csv"
    after_accepted: bool = False
    """Load an accepted file first: the bad one is judged against its reference profile."""
    load: dict[str, Any] | None = None


# How the gate's report words each rule (it names settings and columns, not GX's checks).
NOT_NULL, IN_SET, BETWEEN = "missing values; observed", "expected values in", "values within"
UNIQUE, ROW_COUNT = "repeated rows over", "validate.min_rows: expected at least 50 rows"

CASES: dict[str, Case] = {
    # tabular
    "tabular-missing-named-column": Case(
        "tabular", tabular, SettingsError, ("'weight'", "not in the data"),
        load={"features": ["size", "weight"]},
    ),
    "tabular-missing-column": Case(
        "tabular", lambda: tabular().drop(columns=["colour"]), ValidationFailed,
        ("column 'colour': expected the column to exist",), after_accepted=True,
    ),
    "tabular-nulls": Case(
        "tabular", lambda: changed(tabular(), "size", slice(0, 40), None), ValidationFailed,
        ("validate.max_null_share, column 'size'", NOT_NULL),
    ),
    "tabular-null-labels": Case(
        "tabular", lambda: changed(tabular(), "label", slice(0, 10), None), ValidationFailed,
        (NOT_NULL, "'label'"),
    ),
    "tabular-out-of-range": Case(
        "tabular", lambda: tabular().assign(size=lambda f: f["size"] * 10), ValidationFailed,
        ("validate.range_tolerance, column 'size'", BETWEEN), after_accepted=True,
    ),
    "tabular-text-in-number-column": Case(
        "tabular", lambda: changed(tabular(), "size", slice(0, 30), "big"), ValidationFailed,
        ("column 'size': expected values of the types", "'big'"), after_accepted=True,
    ),
    "tabular-unseen-label": Case(
        "tabular", lambda: changed(tabular(), "label", slice(0, 12), "maybe"), ValidationFailed,
        ("validate.expected_classes, column 'label'", IN_SET, "maybe"), after_accepted=True,
    ),
    "tabular-unseen-category": Case(
        "tabular", lambda: changed(tabular(), "colour", slice(0, 40), "purple"),
        ValidationFailed, (IN_SET, "'colour'", "purple"), after_accepted=True,
    ),
    "tabular-too-few-rows": Case("tabular", lambda: tabular(20), ValidationFailed, (ROW_COUNT,)),
    "tabular-duplicated-rows": Case(
        "tabular", lambda: pd.concat([tabular(), tabular()[:40]]), ValidationFailed,
        ("validate.max_duplicate_share", UNIQUE),
    ),
    "tabular-png-named-csv": Case(
        "tabular", png_bytes, DataError, ("data.csv", "is a PNG image"),
    ),
    "tabular-binary-garbage": Case(
        "tabular", lambda: np.random.default_rng(1).bytes(4096) + b"\0", DataError,
        ("data.csv", "binary data"),
    ),
    "tabular-latin-1-text": Case(
        "tabular", lambda: "size,colour,label\n1,rouge \xe9,yes\n".encode("latin-1"), DataError,
        ("data.csv", "not UTF-8"),
    ),
    "tabular-zip-named-csv": Case(
        "tabular", lambda: b"PK\x03\x04" + bytes(200), DataError, ("data.csv", "zip archive"),
    ),
    "tabular-xlsx": Case(
        "tabular", lambda: b"PK\x03\x04" + bytes(200), DataError, ("data.xlsx", "export it as CSV"),
        file_name="data.xlsx",
    ),
    "tabular-csv-named-parquet": Case(
        "tabular", lambda: b"size,colour,label\n1,red,yes\n", DataError,
        ("data.parquet", "could not be read as a table"), file_name="data.parquet",
    ),
    "tabular-empty-file": Case("tabular", lambda: b"", DataError, ("data.csv", "is empty")),
    "tabular-header-only": Case(
        "tabular", lambda: b"size,colour,label\n", DataError, ("data.csv", "no data rows"),
    ),
    # ratings
    "ratings-duplicate-pairs": Case(
        "recommendation", lambda: pd.concat([ratings(), ratings()[:10]]), ValidationFailed,
        (UNIQUE, "user_id", "item_id"),
    ),
    "ratings-out-of-range": Case(
        "recommendation", lambda: changed(ratings(), "stars", slice(0, 5), 7), ValidationFailed,
        ("load.rating_range, column 'rating'", BETWEEN),
    ),
    "ratings-text-ratings": Case(
        "recommendation", lambda: changed(ratings(), "stars", slice(0, 5), "five"),
        ValidationFailed, (NOT_NULL, "'rating'"),
    ),
    "ratings-null-users": Case(
        "recommendation", lambda: changed(ratings(), "user", slice(0, 5), None),
        ValidationFailed, (NOT_NULL, "'user_id'"),
    ),
    "ratings-too-few-rows": Case(
        "recommendation", lambda: ratings(20), ValidationFailed, (ROW_COUNT,),
    ),
    "ratings-missing-column": Case(
        "recommendation", lambda: ratings().drop(columns=["item"]), SettingsError,
        ("'item'", "not in the data"),
    ),
    "ratings-empty-file": Case("recommendation", lambda: b"", DataError, ("is empty",)),
    # text
    "text-blank-texts": Case(
        "text", lambda: changed(text(), "review", slice(0, 5), "   "), ValidationFailed,
        (IN_SET, "'text_blank'"),
    ),
    "text-null-texts": Case(
        "text", lambda: changed(text(), "review", slice(0, 5), None), ValidationFailed,
        (NOT_NULL, "'text_chars'"),
    ),
    "text-too-long": Case(
        "text", lambda: changed(text(), "review", slice(0, 5), "word " * 100), ValidationFailed,
        ("load.max_text_chars, column 'text_chars'", BETWEEN), load={"max_text_chars": 200},
    ),
    "text-unseen-label": Case(
        "text", lambda: changed(text(), "sentiment", slice(0, 12), "meh"), ValidationFailed,
        (IN_SET, "'label'", "meh"), after_accepted=True,
    ),
    "text-header-only": Case(
        "text", lambda: b"review,sentiment\n", DataError, ("data.csv", "no data rows"),
    ),
}  # fmt: skip


def settings_for(family: str, path: Path, load: dict[str, Any] | None = None) -> Settings:
    return Settings.model_validate(
        {
            "pipeline": {"name": "bad-data", "family": family},
            "load": {"source": None, "path": str(path), **LOAD[family], **(load or {})},
            "validate": {"min_rows": 50},
            "train": {"model": {"name": MODELS[family]}},
        }
    )


def write(content: Content, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        content.to_csv(path, index=False)
    return path


def load_and_validate(settings: Settings, workspace: Workspace) -> None:
    run_stage("load", settings, workspace)
    run_stage("validate", settings, workspace)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_data_is_refused_with_a_readable_report(
    name: str, workspace: Workspace, tmp_path: Path
) -> None:
    case = CASES[name]
    paths = workspace.pipeline("bad-data")
    if case.after_accepted:
        accepted = write(GOOD[case.family](), tmp_path / "accepted" / "data.csv")
        load_and_validate(settings_for(case.family, accepted, case.load), workspace)
        assert paths.reference_profile.is_file()
    bad = write(case.bad(), tmp_path / "bad" / case.file_name)

    with pytest.raises(MlaasError) as refused:
        load_and_validate(settings_for(case.family, bad, case.load), workspace)

    assert type(refused.value) is case.error, refused.value
    message = str(refused.value)
    for part in case.message:
        assert part in message, f"{part!r} not in: {message}"
    assert "Traceback" not in message
    if case.error is ValidationFailed:
        assert paths.validation_result.is_file()
        assert (paths.validation_dir / "docs" / "index.html").is_file()
        assert str(paths.validation_result) in message
    assert not paths.splits_dir.exists() and not paths.train_dir.exists()


@pytest.mark.parametrize("family", list(GOOD))
def test_the_good_files_pass_the_gate(family: str, workspace: Workspace, tmp_path: Path) -> None:
    """The control: each bad file above is a good one with one thing broken."""
    good = write(GOOD[family](), tmp_path / "data.csv")
    load_and_validate(settings_for(family, good), workspace)
    assert workspace.pipeline("bad-data").reference_profile.is_file()
