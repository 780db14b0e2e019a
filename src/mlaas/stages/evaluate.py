"""Stage `evaluate`: test metrics and plots on the held-out split, logged to the training run;
optionally k-fold cross-validation of the same model and settings.

Predictions come from the saved model through `load_model`, the path serving uses, so the
figures describe what the endpoint will answer. Metric names are fixed across families:
test_accuracy, test_f1_macro, test_rmse, test_mae, test_r2, cv_rmse, cv_mae,
test_precision_at_10, test_recall_at_10 (whichever apply). Each test metric of the task has its
95% confidence interval beside it (`test_accuracy_ci_low`, `test_accuracy_ci_high`; see
`mlaas.core.confidence`). A network's learning curves (loss and metric per epoch, from the run's
history) are plotted beside the task's plots; a scikit-learn model has no epochs, and no curves.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from mlaas.core.confidence import as_metrics
from mlaas.core.model_card import ModelCard
from mlaas.core.records import Evaluation, SplitInfo, TrainingResult
from mlaas.core.settings import TrainSettings
from mlaas.core.tasks import Task, epoch_metrics, task_of
from mlaas.core.trial_settings import trained_settings
from mlaas.families.base import Family
from mlaas.modeling.models import NetworkModel, PipelineModel, load_model
from mlaas.stages.context import StageContext
from mlaas.stages.evaluate_plots import PLOTS, plot_learning_curves, write_task_figures
from mlaas.stores.files import read_table, write_json
from mlaas.stores.tracking import Tracker


def cross_validate(
    family: Family,
    card: ModelCard,
    table: pa.Table,
    folds: int,
    train_cfg: TrainSettings,
    val_size: float,
    scratch: Path,
) -> dict[str, float]:
    """Mean test metrics of `folds` models, each trained like the real one on the other folds.

    Each fold's training rows give up `val_size` of themselves for early stopping, as in the
    pipeline's own split. Returned as cv_<metric> (cv_rmse, cv_accuracy, ...).
    """
    # Fitting (torch, Lightning) is only needed when CV is asked for.
    from mlaas.modeling.fitting import fit_model

    task = task_of(card)
    targets = table.column(card.target).to_numpy(zero_copy_only=False)
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=card.seed)
        if task.stratify
        else KFold(folds, shuffle=True, random_state=card.seed)
    )
    scores: list[dict[str, float]] = []
    for fold, (rest, held_out) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        fit_rows, val_rows = train_test_split(
            rest,
            test_size=val_size,
            random_state=card.seed,
            stratify=targets[rest] if task.stratify else None,
        )
        model, _ = fit_model(
            family, card, table.take(fit_rows), table.take(val_rows), train_cfg, scratch / str(fold)
        )
        test = table.take(held_out)
        outputs = model.predict(family.features(test, card))
        fold_targets = task.encode_targets(test.column(card.target).to_numpy(False), card)
        scores.append(task.evaluate(fold_targets, outputs, card))
    return {
        name.replace("test_", "cv_", 1): float(np.mean([score[name] for score in scores]))
        for name in scores[0]
    }


def learning_curves(tracker: Tracker, run_id: str, task: Task) -> dict[str, dict[int, float]]:
    """Each epoch metric's value per epoch, from the run's history.

    The first value logged at each step: training logs its summary (the best model's
    val_accuracy, say) at step 0 after the last epoch, and an epoch repeated by a resumed
    training logs what it logged before (training resumes deterministically).
    """
    curves: dict[str, dict[int, float]] = {}
    for name in epoch_metrics(task):
        curve: dict[int, float] = {}
        for step, value in tracker.metric_history(run_id, name):
            curve.setdefault(step, value)
        if curve:
            curves[name] = curve
    return curves


def scored(
    model: NetworkModel | PipelineModel, family: Family, test: pa.Table
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The test rows' encoded targets, the model's outputs on them, and the task's metrics with
    their 95% intervals (the promotion rescores a champion on a new split with the same)."""
    card = model.card
    task = task_of(card)
    targets = task.encode_targets(test.column(card.target).to_numpy(zero_copy_only=False), card)
    outputs = model.predict(family.features(test, card))
    metrics = task.evaluate(targets, outputs, card)
    metrics |= as_metrics(task.intervals(targets, outputs, card))
    return targets, outputs, metrics


def run(ctx: StageContext, training: TrainingResult, splits: SplitInfo) -> Evaluation:
    paths, family, cfg = ctx.paths, ctx.family, ctx.settings.evaluate
    model = load_model(training.model_dir)
    card = model.card
    task = task_of(card)
    test = read_table(splits.test.path, "split")
    targets, outputs, metrics = scored(model, family, test)
    shutil.rmtree(paths.evaluation_dir / PLOTS, ignore_errors=True)  # no plot of an older model
    write_task_figures(task, targets, outputs, card, paths.evaluation_dir)
    tracker = Tracker(ctx.workspace)
    if isinstance(model, NetworkModel):
        plot_learning_curves(
            learning_curves(tracker, training.run_id, task),
            paths.evaluation_dir / PLOTS / "learning_curves.png",
        )
    train = read_table(splits.train.path, "split")
    metrics |= family.extra_metrics(model, train, test, cfg)
    if cfg.cv_folds:
        split = ctx.settings.split
        whole = pa.concat_tables([train, read_table(splits.val.path, "split"), test])
        metrics |= cross_validate(
            family,
            card,
            whole,
            cfg.cv_folds,
            # The search's winner's settings, on one process (a fold fits here, in the flow).
            trained_settings(ctx.settings, training.search).train.single_process(),
            split.val_size / (1.0 - split.test_size),
            paths.root / "cross-validation",
        )
    write_json(metrics, paths.metrics)

    tracker.log_metrics(training.run_id, metrics)
    plots = sorted((paths.evaluation_dir / PLOTS).glob("*.png"))
    for artifact in [*plots, *sorted(paths.evaluation_dir.glob("*_report.json"))]:
        tracker.log_artifact(training.run_id, artifact, "evaluation")
    evaluation = Evaluation(
        run_id=training.run_id,
        model_hash=training.model_hash,
        task=card.task,
        metrics=metrics,
        metrics_path=paths.metrics,
        plots=plots,
        test_rows=test.num_rows,
    )
    write_json(evaluation, paths.evaluation_record)
    return evaluation
