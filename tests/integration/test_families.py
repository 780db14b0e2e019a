"""Every family through the same stages (load -> ... -> promote) on tiny slices of its real
data, and on a tiny user-data file or folder: registered under its own name, with the fixed tags
and metric names, and each model reloads from the registry and predicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests.conftest import shrink

from mlaas.core.settings import Settings
from mlaas.stages.table import run_stage
from mlaas.stores.registry import CHAMPION, Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
UP_TO_PROMOTION = ("load", "validate", "split", "train", "evaluate", "register", "promote")
FAST = {"max_epochs": 4, "batch_size": 32, "learning_rate": 0.01}


def _tiny(project: Settings, name: str, family: str, model: dict[str, Any], **sections: Any):
    return shrink(
        project,
        name,
        pipeline={"family": family},
        train={**FAST, "model": model},
        validate={"min_rows": 20, **sections.pop("validate", {})},
        **sections,
    )


def _run(settings: Settings, workspace: Workspace) -> dict[str, Any]:
    for stage in UP_TO_PROMOTION:
        run_stage(stage, settings, workspace)
    registry = Registry(workspace)
    champion = registry.version_with_alias(settings.pipeline.name, CHAMPION)
    assert champion is not None
    return {
        "tags": registry.version_tags(champion.name, champion.version),
        "metrics": registry.run_metrics(champion.run_id),
        "uri": champion.model_uri,
    }


def _reload_and_predict(workspace: Workspace, uri: str, rows: Any) -> list[dict[str, Any]]:
    mlflow.set_tracking_uri(workspace.tracking_uri)
    return list(mlflow.pyfunc.load_model(uri).predict(rows))


CASES = {
    "tabular-classification-svm": (
        "tabular",
        {"name": "svm"},
        {"load": {"source": "breast_cancer"}},
        {"test_accuracy", "test_f1_macro"},
        "breast_cancer",
    ),
    "tabular-regression-mlp": (
        "tabular",
        {"name": "mlp", "hidden_units": [16]},
        {"load": {"source": "diabetes"}},
        {"test_rmse", "test_mae", "test_r2"},
        "diabetes",
    ),
    "text-tfidf": (
        "text",
        {"name": "tfidf_linear", "hash_bits": 12},
        {"load": {"source": "bbc_news", "max_rows": 300}},
        {"test_accuracy", "test_f1_macro"},
        "bbc_news",
    ),
    "text-transformer": (
        "text",
        {"name": "transformer", "layers": 1, "max_tokens": 32},
        {"load": {"source": "rotten_tomatoes", "max_rows": 300}},
        {"test_accuracy", "test_f1_macro"},
        "rotten_tomatoes",
    ),
    "text-minilm": (
        "text",
        {"name": "minilm", "max_tokens": 32},
        {"load": {"source": "rotten_tomatoes", "max_rows": 200}},
        {"test_accuracy", "test_f1_macro"},
        "rotten_tomatoes",
    ),
    "recommendation-mf": (
        "recommendation",
        {"name": "matrix_factorization", "factors": 8},
        {"load": {"source": "movielens_100k", "max_rows": 3000}, "evaluate": {"cv_folds": 2}},
        {"test_rmse", "test_mae", "cv_rmse", "cv_mae", "test_precision_at_10", "test_recall_at_10"},
        "movielens_100k",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_family_runs_the_same_stages_on_its_real_data(
    case: str, project_settings: Settings, workspace: Workspace
) -> None:
    family, model, sections, metric_names, dataset = CASES[case]
    name = case.replace("-", "_")
    outcome = _run(_tiny(project_settings, name, family, model, **sections), workspace)
    tags = outcome["tags"]
    assert (tags["mlaas.family"], tags["mlaas.model"], tags["mlaas.dataset"]) == (
        family,
        model["name"],
        dataset,
    )
    assert metric_names <= set(outcome["metrics"]), sorted(outcome["metrics"])


def test_user_tabular_file_with_mixed_columns(
    project_settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    rows = 200
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, rows).round(2),
            "plan": rng.choice(["basic", "pro"], rows),
            "visits": rng.poisson(5, rows),
        }
    )
    frame.loc[::25, "age"] = np.nan  # 4% missing: under the gate's 5% and imputed
    frame["churned"] = np.where((frame["plan"] == "basic") & (frame["visits"] < 5), "yes", "no")
    path = tmp_path / "customers.csv"
    frame.to_csv(path, index=False)
    settings = _tiny(
        project_settings,
        "customers",
        "tabular",
        {"name": "gradient_boosting", "max_iter": 50},
        load={"source": None, "path": str(path), "target": "churned"},
    )
    outcome = _run(settings, workspace)
    assert outcome["tags"]["mlaas.dataset"] == "customers"
    assert outcome["metrics"]["test_accuracy"] > 0.8
    raw = pd.DataFrame({"age": [30.0, None], "plan": ["basic", "enterprise"], "visits": [1.0, 9.0]})
    predictions = _reload_and_predict(workspace, outcome["uri"], raw)
    assert [set(p["probabilities"]) for p in predictions] == [{"no", "yes"}] * 2


def test_user_text_and_ratings_files(
    project_settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    words = {"good": ["great", "fine", "lovely"], "bad": ["awful", "poor", "dire"]}
    rng = np.random.default_rng(2)
    texts = [
        (" ".join(rng.choice(words[label], 4)), label)
        for label in ("good", "bad")
        for _ in range(60)
    ]
    text_file = tmp_path / "reviews.csv"
    pd.DataFrame(texts, columns=["review", "verdict"]).to_csv(text_file, index=False)
    text = _run(
        _tiny(
            project_settings,
            "reviews",
            "text",
            {"name": "tfidf_linear", "hash_bits": 10},
            load={
                "source": None,
                "path": str(text_file),
                "text_column": "review",
                "target": "verdict",
            },
        ),
        workspace,
    )
    assert text["metrics"]["test_accuracy"] == 1.0

    ratings = pd.DataFrame(
        [(f"u{u}", f"i{i}", float(1 + (u + i) % 5)) for u in range(30) for i in range(20)],
        columns=["who", "what", "stars"],
    )
    ratings_file = tmp_path / "stars.csv"
    ratings.to_csv(ratings_file, index=False)
    rated = _run(
        _tiny(
            project_settings,
            "stars",
            "recommendation",
            {"name": "matrix_factorization", "factors": 4},
            load={
                "source": None,
                "path": str(ratings_file),
                "user_column": "who",
                "item_column": "what",
                "target": "stars",
            },
        ),
        workspace,
    )
    assert {"test_rmse", "test_precision_at_10"} <= set(rated["metrics"])


def test_user_image_folder(
    project_settings: Settings, workspace: Workspace, tmp_path: Path
) -> None:
    """A folder laid out class_name/*.png, of mixed sizes, resized to one shape."""
    rng = np.random.default_rng(3)
    for label, brightness in (("dark", 40), ("light", 210)):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(30):
            size = (12, 12) if index % 2 else (16, 14)
            pixels = np.clip(rng.normal(brightness, 20, size), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(tmp_path / "images" / label / f"{index}.png")
    settings = _tiny(
        project_settings,
        "shades",
        "image",
        {"name": "cnn", "conv_channels": [4], "hidden_units": 8, "augment_max_shift": 0},
        load={"source": None, "path": str(tmp_path / "images"), "image_size": [12, 12]},
    )
    settings = settings.model_copy(
        update={"train": settings.train.model_copy(update={"max_epochs": 40})}
    )
    outcome = _run(settings, workspace)
    assert outcome["tags"]["mlaas.dataset"] == "images"
    assert outcome["metrics"]["test_accuracy"] == 1.0
    (prediction,) = _reload_and_predict(
        workspace, outcome["uri"], np.full((1, 12, 12), 220.0, dtype=np.float32)
    )
    assert prediction["label"] == "light"


def test_compare_shows_every_model_of_a_data_set_side_by_side(
    project_settings: Settings, workspace: Workspace
) -> None:
    from mlaas.cli.compare import format_table, runs_for_dataset

    for model in ("logistic_regression", "gradient_boosting"):
        _run(
            _tiny(project_settings, f"cancer_{model}", "tabular", {"name": model},
                  load={"source": "breast_cancer"}),
            workspace,
        )  # fmt: skip
    rows = runs_for_dataset(workspace, "breast_cancer")
    assert {row.model for row in rows} == {"logistic_regression", "gradient_boosting"}
    assert all(row.champion for row in rows)  # each pipeline's only version is its champion
    table = format_table(rows)
    assert "test_accuracy" in table and "cancer_gradient_boosting" in table

    def compare(dataset: str) -> subprocess.CompletedProcess[str]:
        command = [Path(sys.executable).parent / "mlaas", "--home", workspace.home, "compare"]
        return subprocess.run(
            [*command, "--dataset", dataset], capture_output=True, text=True, timeout=120
        )

    shown = compare("breast_cancer")
    assert shown.returncode == 0 and "cancer_logistic_regression" in shown.stdout
    missing = compare("nothing")
    assert missing.returncode == 2 and "no evaluated runs" in missing.stderr
