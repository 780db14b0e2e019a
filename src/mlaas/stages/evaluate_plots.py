"""The files that show a task's test figures: a classifier's per-class report and confusion
matrix, a regression's predicted-against-actual plot, a network's learning curves.

The figures themselves are `mlaas.core.tasks`'s (pure); this module only draws and writes them,
under the evaluation folder (`PLOTS` holds the images).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlaas.core.model_card import Label, ModelCard
from mlaas.core.tasks import Classification, Task, classification_report_for

PLOTS = "plots"  # the folder, beside the metrics, that holds a task's evaluation plots


def write_task_figures(
    task: Task, targets: np.ndarray, outputs: np.ndarray, card: ModelCard, folder: Path
) -> None:
    """A classifier's per-class report and confusion matrix; a regression's (and a rating's)
    predicted-against-actual plot."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(task, Classification):
        report = classification_report_for(targets, outputs, card.labels)
        plot_confusion_matrix(
            report["confusion"], card.labels, folder / PLOTS / "confusion_matrix.png"
        )
        (folder / "classification_report.json").write_text(json.dumps(report, indent=2) + "\n")
    else:
        plot_predicted_vs_actual(targets, outputs, folder / PLOTS / "predicted_vs_actual.png")


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first plot, not with the module:
    the serving path never plots, and the flow imports report modules whether or not they draw."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(confusion: list[list[int]], classes: list[Label], path: Path) -> None:
    plt = pyplot()
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
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(targets, outputs, s=6, alpha=0.4)
    low = float(min(targets.min(initial=0), outputs.min(initial=0)))
    high = float(max(targets.max(initial=1), outputs.max(initial=1)))
    axes.plot([low, high], [low, high], color="grey", linewidth=1)
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.set_title("predicted against actual (test split)")
    _save(figure, path)


def plot_learning_curves(curves: Mapping[str, Mapping[int, float]], path: Path) -> None:
    """Each curve ({epoch index: value}) against the epoch: losses left, the metric right."""
    plt = pyplot()
    figure, (losses, metrics) = plt.subplots(1, 2, figsize=(10, 4))
    for name, curve in sorted(curves.items()):
        epochs = sorted(curve)
        axes = losses if name.endswith("loss") else metrics
        axes.plot(
            [epoch + 1 for epoch in epochs], [curve[e] for e in epochs], marker=".", label=name
        )
    for axes, title in ((losses, "loss"), (metrics, "metric")):
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_xlabel("epoch")
        axes.set_title(f"{title} per epoch")
        if axes.has_data():
            axes.legend()
    # Training figures are of the batches as trained on: dropout and augmentation on.
    figure.suptitle("learning curves (train_*: training batches, as trained)")
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot().close(figure)
