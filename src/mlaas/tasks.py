"""What a model predicts, and all that follows from it: how targets are encoded, the loss, what
the network's raw output means, the test metrics and plots, and the served form of a prediction.

Three tasks cover every family: classification (image, text, tabular), regression (tabular) and
rating (recommendation: a regression with a bounded range, served as `rating`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
)
from torch import nn

from mlaas.families.base import Label, ModelCard, TaskName

PLOTS = "plots"  # the folder, beside the metrics, that holds a task's evaluation plots


class Classification:
    name: TaskName = "classification"
    stratify = True
    default_metric = "test_accuracy"
    validation_metric = "val_accuracy"

    def higher_is_better(self, metric: str) -> bool:
        return not metric.endswith("loss")

    def encode_targets(self, values: np.ndarray, card: ModelCard) -> np.ndarray:
        """Labels to output positions; a label outside the card's classes is an error."""
        assert card.classes is not None
        index = {label: position for position, label in enumerate(card.classes)}
        try:
            return np.array([index[label] for label in values.tolist()], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"label {error.args[0]!r} is not one of the model's classes") from None

    def output_size(self, card: ModelCard) -> int:
        assert card.classes is not None
        return len(card.classes)

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(raw, targets)

    def outputs(self, raw: torch.Tensor, card: ModelCard) -> torch.Tensor:
        return torch.softmax(raw, dim=1)

    def validation_metrics(self, raw: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return {"val_accuracy": (raw.argmax(dim=1) == targets).float().mean()}

    def evaluate(
        self, targets: np.ndarray, outputs: np.ndarray, card: ModelCard, folder: Path
    ) -> dict[str, float]:
        """Accuracy, macro precision / recall / F1; a per-class report and confusion matrix."""
        assert card.classes is not None
        report = classification_report_for(targets, outputs, card.classes)
        folder.mkdir(parents=True, exist_ok=True)
        plot_confusion_matrix(
            report["confusion"], card.classes, folder / PLOTS / "confusion_matrix.png"
        )
        _write_json(report, folder / "classification_report.json")
        return dict(report["metrics"])

    def describe(self, outputs: np.ndarray, card: ModelCard) -> list[dict[str, Any]]:
        assert card.classes is not None
        names = [str(label) for label in card.classes]
        best = outputs.argmax(axis=1)
        outputs = outputs.astype(np.float64)  # rounding float32 leaves float32's noise digits
        return [
            {
                "label": card.classes[index],
                "probabilities": dict(zip(names, row.round(6).tolist(), strict=True)),
            }
            for index, row in zip(best, outputs, strict=True)
        ]


class Regression:
    name: TaskName = "regression"
    stratify = False
    default_metric = "test_rmse"
    validation_metric = "val_rmse"
    served_key = "value"

    def higher_is_better(self, metric: str) -> bool:
        return metric.endswith(("_r2", "precision_at_10", "recall_at_10"))

    def encode_targets(self, values: np.ndarray, card: ModelCard) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def output_size(self, card: ModelCard) -> int:
        return 1

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(raw.reshape(-1), targets)

    def outputs(self, raw: torch.Tensor, card: ModelCard) -> torch.Tensor:
        values = raw.reshape(-1)
        if card.target_range is not None:
            low, high = card.target_range
            values = values.clamp(low, high)
        return values

    def validation_metrics(self, raw: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return {"val_rmse": torch.sqrt(nn.functional.mse_loss(raw.reshape(-1), targets))}

    def evaluate(
        self, targets: np.ndarray, outputs: np.ndarray, card: ModelCard, folder: Path
    ) -> dict[str, float]:
        """RMSE, MAE and R²; a predicted-against-actual plot."""
        folder.mkdir(parents=True, exist_ok=True)
        plot_predicted_vs_actual(targets, outputs, folder / PLOTS / "predicted_vs_actual.png")
        return regression_metrics(targets, outputs, prefix="test_")

    def describe(self, outputs: np.ndarray, card: ModelCard) -> list[dict[str, Any]]:
        return [{self.served_key: round(float(value), 6)} for value in outputs.reshape(-1)]


class Rating(Regression):
    """A rating of an item by a user: a regression clamped to the rating range."""

    name: TaskName = "rating"
    served_key = "rating"


TASKS: dict[str, Classification | Regression] = {
    task.name: task for task in (Classification(), Regression(), Rating())
}
Task = Classification | Regression


def task_of(card: ModelCard) -> Task:
    return TASKS[card.task]


def regression_metrics(targets: np.ndarray, outputs: np.ndarray, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}rmse": float(np.sqrt(mean_squared_error(targets, outputs))),
        f"{prefix}mae": float(mean_absolute_error(targets, outputs)),
        f"{prefix}r2": float(r2_score(targets, outputs)),
    }


def classification_report_for(
    targets: np.ndarray, probabilities: np.ndarray, classes: list[Label]
) -> dict[str, Any]:
    predicted = probabilities.argmax(axis=1)
    positions = list(range(len(classes)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        targets, predicted, labels=positions, average="macro", zero_division=0
    )
    per_class = classification_report(
        targets,
        predicted,
        labels=positions,
        target_names=[str(label) for label in classes],
        output_dict=True,
        zero_division=0,
    )
    return {
        "metrics": {
            "test_accuracy": float(accuracy_score(targets, predicted)),
            "test_precision_macro": float(precision),
            "test_recall_macro": float(recall),
            "test_f1_macro": float(f1),
        },
        "per_class": {
            name: {key: float(value) for key, value in row.items()}
            for name, row in per_class.items()
            if isinstance(row, dict)
        },
        "confusion": confusion_matrix(targets, predicted, labels=positions).tolist(),
    }


def _pyplot() -> Any:
    # Imported on first plot, not with the module: the serving path never plots.
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(confusion: list[list[int]], classes: list[Label], path: Path) -> None:
    plt = _pyplot()
    matrix = np.asarray(confusion)
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    ticks = range(len(classes))
    axes.set_xticks(ticks, [str(label) for label in classes], rotation=45)
    axes.set_yticks(ticks, [str(label) for label in classes])
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in ticks:
        for column in ticks:
            value = matrix[row, column]
            colour = "white" if value > threshold else "black"
            axes.text(column, row, str(value), ha="center", va="center", color=colour, fontsize=8)
    axes.set_title("confusion matrix (test split)")
    _save(figure, path)


def plot_predicted_vs_actual(targets: np.ndarray, outputs: np.ndarray, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(targets, outputs, s=6, alpha=0.4)
    low = float(min(targets.min(initial=0), outputs.min(initial=0)))
    high = float(max(targets.max(initial=1), outputs.max(initial=1)))
    axes.plot([low, high], [low, high], color="grey", linewidth=1)
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title("predicted against actual (test split)")
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)


def _write_json(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
