"""Every metric a task logs is declared with its direction, and the declarations say the right
way: promotion reads them, so a wrong one crowns the worse model."""

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from mlaas.core.confidence import as_metrics
from mlaas.core.metrics import Metric, catalog
from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import LogisticRegressionSettings
from mlaas.core.settings import EvaluateSettings
from mlaas.core.tasks import TASKS, epoch_metrics

SCORES = ("test_accuracy", "test_precision_macro", "test_recall_macro", "test_f1_macro")
LOSSES = ("train_loss", "val_loss", "best_val_loss")


def evaluated(*names: str) -> set[str]:
    """Each test metric, its interval's bounds and its cross-validated mean."""
    return {
        variant
        for name in names
        for variant in (name, f"{name}_ci_low", f"{name}_ci_high", name.replace("test_", "cv_"))
    }


HIGHER = {
    "classification": evaluated(*SCORES) | {"train_accuracy", "val_accuracy"},
    "regression": evaluated("test_r2"),
    "rating": evaluated("test_r2")
    | {
        f"test_{rank}_at_5{bound}"
        for rank in ("precision", "recall")
        for bound in ("", "_ci_low", "_ci_high")
    },
}
LOWER = {
    "classification": set(LOSSES),
    "regression": evaluated("test_rmse", "test_mae") | {"train_rmse", "val_rmse", *LOSSES},
    "rating": evaluated("test_rmse", "test_mae")
    | {"train_rmse", "val_rmse", *LOSSES, "baseline_global_mean_rmse", "baseline_bias_only_rmse"},
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_each_metric_a_task_logs_is_better_the_right_way(task: str) -> None:
    metrics = TASKS[task].metrics(EvaluateSettings(top_k=5))
    assert set(metrics) == HIGHER[task] | LOWER[task]
    assert {name for name, metric in metrics.items() if metric.higher_is_better} == HIGHER[task]


def test_the_ranking_metrics_follow_the_configured_k() -> None:
    for k in (1, 5, 10, 50):
        metrics = TASKS["rating"].metrics(EvaluateSettings(top_k=k))
        assert metrics[f"test_precision_at_{k}"].higher_is_better
        assert metrics[f"test_recall_at_{k}_ci_high"].higher_is_better
        assert f"test_precision_at_{k + 1}" not in metrics


def test_a_metric_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="test_rmse"):
        catalog([Metric("test_rmse", False)], [Metric("test_rmse", True)])


def test_what_classification_and_regression_evaluate_is_declared() -> None:
    targets = np.array([0, 1, 2] * 10)
    outputs = np.eye(3)[np.where(np.arange(30) % 7 == 0, (targets + 1) % 3, targets)]
    values = np.linspace(0.0, 3.0, 30)
    shared = {"family": "tabular", "dataset": "toy", "target": "y", "inputs": {}}
    model = LogisticRegressionSettings()
    for card, truth, predicted in (
        (
            ModelCard(task="classification", model=model, classes=[0, 1, 2], **shared),
            targets,
            outputs,
        ),
        (ModelCard(task="regression", model=model, **shared), values, values + np.sin(values)),
    ):
        task = TASKS[card.task]
        logged = task.evaluate(truth, predicted, card)
        logged |= as_metrics(task.intervals(truth, predicted, card))
        declared = task.metrics(EvaluateSettings())
        assert set(logged) <= set(declared), card.task
        assert set(epoch_metrics(task)) <= set(declared), card.task


def test_what_a_recommender_evaluates_is_declared_for_its_k(
    untrained_recommender: tuple[Any, Any],
) -> None:
    from mlaas.families.recommendation import RecommendationFamily

    model, ratings = untrained_recommender
    table = pa.Table.from_pandas(ratings)
    top_2 = EvaluateSettings(top_k=2)
    logged = RecommendationFamily().extra_metrics(model, table, table, top_2)
    assert "test_precision_at_2" in logged
    assert set(logged) <= set(TASKS[model.card.task].metrics(top_2))
