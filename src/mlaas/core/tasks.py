"""What a model predicts, and all that follows from it: how targets are encoded, the loss, what
the network's raw output means, the test metrics, and the served form of a prediction.

Three tasks cover every family: classification (image, text, tabular), regression (tabular) and
rating (recommendation: a regression with a bounded range, served as `rating`). Pure: the files
that show a task's figures (reports, plots) are the evaluate stage's (`stages.evaluate_plots`).

torch and scikit-learn are imported by the functions that use them (losses, test metrics): the
model server's leader process imports this module to build its API's schema and needs neither,
and they are two of the three seconds it took to start listening.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas.core.confidence import Interval, bootstrap_intervals, measured_metric, wilson_interval
from mlaas.core.metrics import Metric, MetricCatalog, catalog, evaluated, with_intervals
from mlaas.core.model_card import Label, ModelCard, TaskName
from mlaas.core.settings import EvaluateSettings

if TYPE_CHECKING:
    import torch


class Classification:
    name: TaskName = "classification"
    stratify = True
    default_metric = "test_accuracy"
    validation_metric = "val_accuracy"
    training_metric = "train_accuracy"
    served_key = "label"

    def metrics(self, evaluate: EvaluateSettings) -> MetricCatalog:
        """Every metric a classifier logs: scores in [0, 1], and the losses."""
        return catalog(
            evaluated(
                Metric(name, higher_is_better=True)
                for name in (
                    "test_accuracy",
                    "test_precision_macro",
                    "test_recall_macro",
                    "test_f1_macro",
                )
            ),
            training_metrics(self, batch_metric_higher_is_better=True),
        )

    def scale(self, metric: str, value: float) -> float:
        """What a difference in `metric` is measured against: all its metrics are in [0, 1]."""
        return 1.0

    def encode_targets(self, values: np.ndarray, card: ModelCard) -> np.ndarray:
        """Labels to output positions; a label outside the card's classes is an error."""
        index = {label: position for position, label in enumerate(card.labels)}
        try:
            return np.array([index[label] for label in values.tolist()], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"label {error.args[0]!r} is not one of the model's classes") from None

    def output_size(self, card: ModelCard) -> int:
        return len(card.labels)

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional

        return functional.cross_entropy(raw, targets)

    def outputs(self, raw: torch.Tensor, card: ModelCard) -> torch.Tensor:
        return raw.softmax(dim=1)

    def batch_metric(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (raw.argmax(dim=1) == targets).float().mean()

    def validation_metrics(self, raw: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return {self.validation_metric: self.batch_metric(raw, targets)}

    def evaluate(
        self, targets: np.ndarray, outputs: np.ndarray, card: ModelCard
    ) -> dict[str, float]:
        """Accuracy, macro precision / recall / F1."""
        report = classification_report_for(targets, outputs, card.labels)
        return dict(report["metrics"])

    def intervals(
        self, targets: np.ndarray, outputs: np.ndarray, card: ModelCard
    ) -> dict[str, Interval]:
        """Wilson for accuracy; a seeded bootstrap for the macro averages (`core.confidence`)."""
        predicted, classes = outputs.argmax(axis=1), len(card.labels)
        intervals = bootstrap_intervals(
            lambda rows: macro_scores(targets, predicted, classes, rows),
            len(targets),
            card.seed,
        )
        correct = int((predicted == targets).sum())
        return {"test_accuracy": wilson_interval(correct, len(targets)), **intervals}

    def describe(self, outputs: np.ndarray, card: ModelCard) -> list[dict[str, Any]]:
        classes = card.labels
        names = [str(label) for label in classes]
        best = outputs.argmax(axis=1)
        outputs = outputs.astype(np.float64)  # rounding float32 leaves float32's noise digits
        return [
            {
                "label": classes[index],
                "probabilities": dict(zip(names, row.round(6).tolist(), strict=True)),
            }
            for index, row in zip(best, outputs, strict=True)
        ]


class Regression:
    name: TaskName = "regression"
    stratify = False
    default_metric = "test_rmse"
    validation_metric = "val_rmse"
    training_metric = "train_rmse"
    served_key = "value"

    # Errors in the target's units; every other metric of a regression is a score in [0, 1].
    in_target_units = ("test_rmse", "test_mae")

    def metrics(self, evaluate: EvaluateSettings) -> MetricCatalog:
        """Every metric a regression logs: errors (lower is better), R², and the losses."""
        return catalog(
            evaluated(
                (
                    Metric("test_rmse", higher_is_better=False),
                    Metric("test_mae", higher_is_better=False),
                    Metric("test_r2", higher_is_better=True),
                )
            ),
            training_metrics(self, batch_metric_higher_is_better=False),
        )

    def scale(self, metric: str, value: float) -> float:
        """What a difference in `metric` is measured against: an error against its own size
        (targets come in any unit), a score in [0, 1] against 1."""
        return abs(value) if measured_metric(metric) in self.in_target_units else 1.0

    def encode_targets(self, values: np.ndarray, card: ModelCard) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def output_size(self, card: ModelCard) -> int:
        return 1

    def loss(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional

        return functional.mse_loss(raw.reshape(-1), targets)

    def outputs(self, raw: torch.Tensor, card: ModelCard) -> torch.Tensor:
        values = raw.reshape(-1)
        if card.target_range is not None:
            low, high = card.target_range
            values = values.clamp(low, high)
        return values

    def batch_metric(self, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional

        return functional.mse_loss(raw.reshape(-1), targets).sqrt()

    def validation_metrics(self, raw: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return {self.validation_metric: self.batch_metric(raw, targets)}

    def evaluate(
        self, targets: np.ndarray, outputs: np.ndarray, card: ModelCard
    ) -> dict[str, float]:
        """RMSE, MAE and R²."""
        return regression_metrics(targets, outputs, prefix="test_")

    def intervals(
        self, targets: np.ndarray, outputs: np.ndarray, card: ModelCard
    ) -> dict[str, Interval]:
        """A seeded bootstrap of RMSE, MAE and R² over the test rows."""
        truth = np.asarray(targets, dtype=np.float64).reshape(-1)
        errors = np.asarray(outputs, dtype=np.float64).reshape(-1) - truth
        return bootstrap_intervals(
            lambda rows: resampled_regression_metrics(truth, errors, rows, prefix="test_"),
            len(truth),
            card.seed,
        )

    def describe(self, outputs: np.ndarray, card: ModelCard) -> list[dict[str, Any]]:
        return [{self.served_key: round(float(value), 6)} for value in outputs.reshape(-1)]


class Rating(Regression):
    """A rating of an item by a user: a regression clamped to the rating range."""

    name: TaskName = "rating"
    served_key = "rating"

    def metrics(self, evaluate: EvaluateSettings) -> MetricCatalog:
        """A regression's metrics, the recommender's ranking of the top `evaluate.top_k` items
        and the baselines' errors (`families.recommendation`)."""
        ranking = (
            Metric(f"test_precision_at_{evaluate.top_k}", higher_is_better=True),
            Metric(f"test_recall_at_{evaluate.top_k}", higher_is_better=True),
        )
        baselines = (
            Metric("baseline_global_mean_rmse", higher_is_better=False),
            Metric("baseline_bias_only_rmse", higher_is_better=False),
        )
        return catalog(super().metrics(evaluate).values(), with_intervals(ranking), baselines)


TASKS: dict[str, Classification | Regression] = {
    task.name: task for task in (Classification(), Regression(), Rating())
}
Task = Classification | Regression


def task_of(card: ModelCard) -> Task:
    return TASKS[card.task]


def training_metrics(task: Task, batch_metric_higher_is_better: bool) -> tuple[Metric, ...]:
    """What training logs: the losses (best_val_loss: the kept checkpoint's), and the task's
    batch metric on training and validation batches."""
    losses = ("train_loss", "val_loss", "best_val_loss")
    return (
        *(Metric(name, higher_is_better=False) for name in losses),
        Metric(task.training_metric, batch_metric_higher_is_better),
        Metric(task.validation_metric, batch_metric_higher_is_better),
    )


def epoch_metrics(task: Task) -> tuple[str, ...]:
    """What a network logs each epoch: the learning curves."""
    return ("train_loss", "val_loss", task.training_metric, task.validation_metric)


def regression_metrics(targets: np.ndarray, outputs: np.ndarray, prefix: str) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        f"{prefix}rmse": float(np.sqrt(mean_squared_error(targets, outputs))),
        f"{prefix}mae": float(mean_absolute_error(targets, outputs)),
        f"{prefix}r2": float(r2_score(targets, outputs)),
    }


def resampled_regression_metrics(
    targets: np.ndarray, errors: np.ndarray, rows: np.ndarray, prefix: str
) -> dict[str, np.ndarray]:
    """RMSE, MAE and R² of each resample (a row of `rows`): `regression_metrics`, vectorised."""
    squared = np.square(errors[rows]).sum(axis=1)
    picked = targets[rows]
    spread = np.square(picked - picked.mean(axis=1, keepdims=True)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(spread > 0, 1 - squared / spread, np.nan)  # undefined for one target
    return {
        f"{prefix}rmse": np.sqrt(squared / rows.shape[1]),
        f"{prefix}mae": np.abs(errors[rows]).mean(axis=1),
        f"{prefix}r2": r2,
    }


def macro_scores(
    targets: np.ndarray, predicted: np.ndarray, classes: int, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Macro precision, recall and F1 of each resample (a row of `rows`), as
    `classification_report_for` computes them: every class counts, 0 where undefined."""
    resamples = rows.shape[0]
    cells = (targets * classes + predicted)[rows] + (np.arange(resamples) * classes**2)[:, None]
    confusion = np.bincount(cells.ravel(), minlength=resamples * classes**2).reshape(
        resamples, classes, classes
    )
    hits = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    actual, guessed = confusion.sum(axis=2), confusion.sum(axis=1)

    def share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
        return np.divide(part, whole, out=np.zeros_like(part), where=whole > 0)

    return {
        "test_precision_macro": share(hits, guessed).mean(axis=1),
        "test_recall_macro": share(hits, actual).mean(axis=1),
        "test_f1_macro": share(2 * hits, actual + guessed).mean(axis=1),
    }


def classification_report_for(
    targets: np.ndarray, probabilities: np.ndarray, classes: list[Label]
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
    )

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
