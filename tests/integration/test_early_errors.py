"""Every settings error stops `mlaas run` before anything starts: the real command, one short
message naming the setting, status 2, no traceback, and no Prefect or MLflow state left behind.

Each case runs the installed `mlaas` in a subprocess with its own MLAAS_HOME. The check is also
fast (about half a second, against 18-50 s when the flow found these errors), but the tests do
not time it: they prove what makes it fast, that none of the flow's libraries is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas.core.settings import LoadSettings
from mlaas.families import OUTLINES, get_family

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MLAAS = Path(sys.executable).parent / "mlaas"
FLOW_LIBRARIES = ("prefect", "mlflow", "torch", "lightning", "great_expectations", "bentoml")
PACKAGE = {
    "bentofile": str(PROJECT_ROOT / "bentofile.yaml"),
    "build_context": str(PROJECT_ROOT / "src"),
}
TABLE = "size,colour,label\n1.5,red,yes\n2.5,blue,no\n"
RATINGS = "user,item,stars\nu1,i1,4\nu2,i1,3\n"


@dataclass(frozen=True)
class Case:
    params: dict[str, Any]
    setting: str
    """The key the message must name."""
    says: tuple[str, ...] = ()
    """More the message must say (what is wrong, what to do)."""
    files: dict[str, str] = field(default_factory=dict)
    """Files to write beside the params (the user's data)."""


def own_data(family: str, model: str, **load: Any) -> dict[str, Any]:
    return {
        "pipeline": {"name": "early", "family": family},
        "load": {"source": None, **load},
        "train": {"model": {"name": model}},
    }


CASES: dict[str, Case] = {
    "key-typo": Case(
        {"load": {"sourc": "mnist"}}, "load.sourc", ("unknown key", "did you mean 'source'")
    ),
    "model-key-typo": Case(
        {"train": {"model": {"name": "cnn", "kernal_size": 3}}},
        "train.model.kernal_size",
        ("did you mean 'kernel_size'",),
    ),
    "unknown-family": Case({"pipeline": {"family": "audio"}}, "pipeline.family", ("'audio'",)),
    "model-the-family-lacks": Case(
        {"pipeline": {"family": "text"}, "load": {"source": "bbc_news"}},
        "train.model.name",
        ("'cnn'", "tfidf_linear"),
    ),
    "model-for-another-task": Case(
        {
            "pipeline": {"family": "tabular"},
            "load": {"source": "breast_cancer"},
            "train": {"model": {"name": "ridge"}},
        },
        "train.model.name",
        ("does not do classification", "logistic_regression"),
    ),
    "unknown-source": Case({"load": {"source": "cifar10"}}, "load.source", ("'cifar10'", "mnist")),
    "missing-path": Case(
        own_data("tabular", "ridge", path="nowhere.csv", target="y"),
        "load.path",
        ("nowhere.csv does not exist",),
    ),
    "file-for-an-image-folder": Case(
        own_data("image", "cnn", path="data.csv"),
        "load.path",
        ("is not a folder",),
        files={"data.csv": TABLE},
    ),
    "spreadsheet": Case(
        own_data("tabular", "svm", path="data.xlsx", target="label"),
        "load.path",
        ("export it as CSV",),
        files={"data.xlsx": TABLE},
    ),
    "missing-target-column": Case(
        own_data("tabular", "svm", path="data.csv", target="churned"),
        "load.target",
        ("'churned'", "['size', 'colour', 'label']"),
        files={"data.csv": TABLE},
    ),
    "missing-feature-column": Case(
        own_data("tabular", "svm", path="data.csv", target="label", features=["size", "weight"]),
        "load.features",
        ("'weight'",),
        files={"data.csv": TABLE},
    ),
    "unset-text-column": Case(
        own_data("text", "tfidf_linear", path="data.csv", target="label"),
        "load.text_column",
        ("name the column",),
        files={"data.csv": TABLE},
    ),
    "missing-ratings-column": Case(
        own_data(
            "recommendation",
            "matrix_factorization",
            path="ratings.csv",
            user_column="customer",
            item_column="item",
            target="stars",
        ),
        "load.user_column",
        ("'customer'",),
        files={"ratings.csv": RATINGS},
    ),
    "missing-bentofile": Case(
        {"package": {"bentofile": "nowhere/bentofile.yaml"}},
        "package.bentofile",
        ("is not a file",),
    ),
}


def write_case(case: Case, folder: Path) -> Path:
    for name, content in case.files.items():
        (folder / name).write_text(content)
    params = {**case.params, "package": {**PACKAGE, **case.params.get("package", {})}}
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def mlaas_run(params: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MLAAS), "run", "--params", params.name],
        cwd=params.parent,
        env={**os.environ, "MLAAS_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_a_settings_error_stops_mlaas_run_before_anything_starts(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    home = tmp_path / "home"
    done = mlaas_run(write_case(case, tmp_path), home)

    assert done.returncode == 2, done.stderr
    message = done.stderr.strip()
    assert message.startswith("mlaas: error: "), message
    assert case.setting in message, message
    for part in case.says:
        assert part in message, f"{part!r} not in: {message}"
    assert "Traceback" not in done.stderr + done.stdout
    assert "\n\n" not in message, "one paragraph"
    assert done.stdout == ""
    # Nothing started: no Prefect database (so no flow run), no MLflow store, no stage output.
    assert not (home / "prefect" / "prefect.db").exists()
    assert not (home / "mlflow.db").exists()
    assert not (home / "pipelines").exists()


def test_the_params_are_checked_before_the_flows_libraries_are_imported(tmp_path: Path) -> None:
    """What makes the check take a fraction of a second: Prefect, MLflow, torch and GX (seconds
    each to import) are not imported when the settings are wrong."""
    params = write_case(CASES["missing-feature-column"], tmp_path)
    probe = (
        "import sys\n"
        "from mlaas.cli.main import main\n"
        f"status = main(['--home', {str(tmp_path / 'home')!r}, 'run', '--params', 'params.yaml'])\n"
        f"print(status, sorted(m for m in {FLOW_LIBRARIES!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=params.parent, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["2", "[]"], done.stdout + done.stderr


@pytest.mark.parametrize("name", list(OUTLINES))
def test_each_outline_declares_what_its_family_offers(name: str) -> None:
    """The early check reads the outlines; the stages use the families: they must agree."""
    outline, family = OUTLINES[name], get_family(name)
    assert set(outline.models) == set(family.models)
    assert set(outline.sources) == set(family.sources)
    for source, task in outline.sources.items():
        assert family.task(LoadSettings(source=source)) == task
