"""Stage `evaluate`: metrics and plots on the held-out test split, logged to the training run.

Predictions come from the saved model through `Predictor`, the same path serving uses, so the
figures describe what the endpoint will answer.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt
import numpy as np
from pydantic import BaseModel
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from mlaas.families import get_family
from mlaas.families.base import Label, class_indices
from mlaas.predictor import Predictor
from mlaas.records import Evaluation, SplitInfo, TrainingResult
from mlaas.settings import PipelineSettings
from mlaas.storage import read_table, write_json
from mlaas.tracking import Tracker
from mlaas.workspace import Workspace


class ClassificationReport(BaseModel):
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]


def classification_report_for(
    targets: np.ndarray, probabilities: np.ndarray, classes: list[Label]
) -> ClassificationReport:
    """Accuracy, macro precision / recall / F1, a per-class report and the confusion matrix."""
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
    return ClassificationReport(
        metrics={
            "test_accuracy": float(accuracy_score(targets, predicted)),
            "test_precision_macro": float(precision),
            "test_recall_macro": float(recall),
            "test_f1_macro": float(f1),
        },
        per_class={
            name: {key: float(value) for key, value in row.items()}
            for name, row in per_class.items()
            if isinstance(row, dict)
        },
        confusion=confusion_matrix(targets, predicted, labels=positions).tolist(),
    )


def plot_confusion_matrix(confusion: list[list[int]], classes: list[Label], path: Path) -> None:
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
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(
    pipeline: PipelineSettings,
    workspace: Workspace,
    training: TrainingResult,
    splits: SplitInfo,
) -> Evaluation:
    paths = workspace.pipeline(pipeline.name)
    family = get_family(pipeline.family)
    predictor = Predictor.load(training.model_dir)
    card = predictor.card
    test = read_table(splits.test.path, "split")
    targets = class_indices(
        test.column(family.target_column).to_numpy(zero_copy_only=False), card.classes
    ).numpy()
    report = classification_report_for(
        targets, predictor.predict_proba(family.inputs(test, card)), card.classes
    )
    figure = paths.evaluation_dir / "confusion_matrix.png"
    plot_confusion_matrix(report.confusion, card.classes, figure)
    write_json(report.metrics, paths.metrics)
    write_json(report, paths.evaluation_dir / "classification_report.json")

    tracker = Tracker(workspace)
    tracker.log_metrics(training.run_id, report.metrics)
    tracker.log_artifact(training.run_id, figure, "evaluation")
    tracker.log_artifact(
        training.run_id, paths.evaluation_dir / "classification_report.json", "evaluation"
    )
    evaluation = Evaluation(
        run_id=training.run_id,
        model_hash=training.model_hash,
        metrics=report.metrics,
        metrics_path=paths.metrics,
        confusion_matrix_path=figure,
    )
    write_json(evaluation, paths.evaluation_record)
    return evaluation
