"""Confidence intervals of test metrics, the too-small-split warning, and what reads them: the
promotion rule's direction, `mlaas compare`'s table, the per-epoch log line, the curves plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from mlaas.cli.compare import Row, format_table
from mlaas.core.confidence import (
    Interval,
    as_metrics,
    bootstrap_intervals,
    is_bound,
    mean_interval,
    measured_metric,
    too_small_warning,
    wilson_interval,
    with_interval,
)
from mlaas.core.model_card import ModelCard
from mlaas.core.model_settings import LogisticRegressionSettings
from mlaas.core.settings import EvaluateSettings, PromoteSettings
from mlaas.core.tasks import (
    TASKS,
    macro_scores,
    regression_metrics,
    resampled_regression_metrics,
)
from mlaas.modeling.lightning_fit import epoch_line
from mlaas.stages.evaluate_plots import plot_learning_curves
from mlaas.stages.promote import rule_for


def test_wilson_interval_matches_the_published_example_and_stays_inside_0_1() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, example (a): 81 of 263.
    interval = wilson_interval(81, 263)
    assert interval.low == pytest.approx(0.2553, abs=5e-5)
    assert interval.high == pytest.approx(0.3662, abs=5e-5)
    perfect = wilson_interval(9, 9)  # accuracy 1.0 on 9 images is not a certainty
    assert perfect.high == 1.0 and perfect.low == pytest.approx(9 / (9 + 1.959964**2))
    assert wilson_interval(0, 0) == Interval(0.0, 1.0)


def test_bootstrap_is_seeded_and_covers_the_mean_as_theory_says() -> None:
    values = np.random.default_rng(0).normal(size=4000)
    first, again = mean_interval(values, seed=7), mean_interval(values, seed=7)
    assert first == again and first is not None
    half_width = 1.96 / np.sqrt(len(values))  # the normal theory's, for a standard normal
    assert first.low < values.mean() < first.high
    assert first.half_width == pytest.approx(half_width, rel=0.15)
    assert mean_interval(np.array([]), seed=7) is None


def test_bootstrap_leaves_out_resamples_where_a_metric_is_undefined() -> None:
    def statistics(rows: np.ndarray) -> dict[str, np.ndarray]:
        return {"defined": rows.mean(axis=1), "never": np.full(len(rows), np.nan)}

    intervals = bootstrap_intervals(statistics, rows=5, seed=0, resamples=50)
    assert set(intervals) == {"defined"}


def test_vectorised_macro_scores_equal_sklearns_on_the_sample_itself() -> None:
    generator = np.random.default_rng(3)
    targets = generator.integers(0, 4, size=60)
    predicted = np.where(generator.random(60) < 0.7, targets, generator.integers(0, 4, size=60))
    predicted[predicted == 3] = 2  # a class never predicted: zero division counts as 0
    identity = np.arange(60)[None, :]
    scores = macro_scores(targets, predicted, 5, identity)  # class 4 is in neither
    expected = precision_recall_fscore_support(
        targets, predicted, labels=range(5), average="macro", zero_division=0
    )
    for name, value in zip(("precision", "recall", "f1"), expected[:3], strict=True):
        assert scores[f"test_{name}_macro"][0] == pytest.approx(value)


def test_vectorised_regression_metrics_equal_the_plain_ones_on_the_sample_itself() -> None:
    generator = np.random.default_rng(4)
    targets = generator.normal(size=30)
    outputs = targets + generator.normal(scale=0.5, size=30)
    resampled = resampled_regression_metrics(
        targets, outputs - targets, np.arange(30)[None, :], "test_"
    )
    for name, value in regression_metrics(targets, outputs, "test_").items():
        assert resampled[name][0] == pytest.approx(value)


def test_every_task_metric_gets_an_interval_that_holds_its_figure() -> None:
    card = ModelCard(
        family="tabular",
        task="classification",
        dataset="toy",
        target="y",
        model=LogisticRegressionSettings(),
        classes=["a", "b", "c"],
        seed=5,
        inputs={},
    )
    targets = np.array([0, 1, 2] * 10)
    outputs = np.eye(3)[np.where(np.arange(30) % 7 == 0, (targets + 1) % 3, targets)]
    task = TASKS["classification"]
    metrics = task.evaluate(targets, outputs, card)
    intervals = task.intervals(targets, outputs, card)
    assert set(intervals) == set(metrics)
    for name, interval in intervals.items():
        assert interval.low <= metrics[name] <= interval.high, name
    assert intervals == task.intervals(targets, outputs, card)  # seeded: the same again


def test_interval_bounds_keep_their_metrics_direction() -> None:
    regression = TASKS["regression"].metrics(EvaluateSettings())
    classification = TASKS["classification"].metrics(EvaluateSettings())
    assert regression["test_r2_ci_low"].higher_is_better
    assert not regression["test_rmse_ci_high"].higher_is_better
    assert classification["test_accuracy_ci_low"].higher_is_better
    chosen = PromoteSettings(metric="test_r2_ci_low")
    assert rule_for(chosen, "regression", EvaluateSettings()).higher_is_better
    assert measured_metric("test_r2_ci_low") == "test_r2" and is_bound("test_mae_ci_high")
    assert not is_bound("test_accuracy")


def test_a_split_too_small_to_tell_models_apart_is_named_with_what_to_do() -> None:
    def accuracy(right: int, rows: int) -> dict[str, float]:
        interval = wilson_interval(right, rows)
        return {"test_accuracy": right / rows, **as_metrics({"test_accuracy": interval})}

    warning = too_small_warning(accuracy(9, 9), "test_accuracy", 1.0, 0.0, 9)
    assert warning is not None
    assert "(9 rows)" in warning and "test_accuracy" in warning and "split.test_size" in warning
    assert too_small_warning(accuracy(488, 500), "test_accuracy", 1.0, 0.0, 500) is None
    # 96 of 100: ±0.04, within the 0.05 a comparison must resolve; a margin cannot loosen it
    # below that, and a smaller resolution demanded of it is not asked for.
    assert too_small_warning(accuracy(96, 100), "test_accuracy", 1.0, 0.0, 100) is None
    assert too_small_warning(accuracy(80, 100), "test_accuracy", 1.0, 0.0, 100) is not None
    assert too_small_warning(accuracy(80, 100), "test_accuracy", 1.0, 0.1, 100) is None
    # Errors are judged against their own size: RMSE 50 +-2 is tight, RMSE 5 +-2 is not.
    tight = {"test_rmse": 50.0, **as_metrics({"test_rmse": Interval(48.0, 52.0)})}
    loose = {"test_rmse": 5.0, **as_metrics({"test_rmse": Interval(3.0, 7.0)})}
    regression = TASKS["regression"]
    assert too_small_warning(tight, "test_rmse", regression.scale("test_rmse", 50.0), 0, 9) is None
    assert too_small_warning(loose, "test_rmse", regression.scale("test_rmse", 5.0), 0, 9)
    assert too_small_warning({"cv_rmse": 1.0}, "cv_rmse", 1.0, 0.0, None) is None  # no interval


def test_a_metric_is_shown_with_its_interval() -> None:
    metrics = {"test_accuracy": 0.976, **as_metrics({"test_accuracy": wilson_interval(488, 500)})}
    assert with_interval(metrics, "test_accuracy") == (
        "test_accuracy=0.9760 (95% CI 0.9585-0.9862)"
    )
    assert with_interval({"cv_rmse": 0.5}, "cv_rmse") == "cv_rmse=0.5000"


def test_compare_labels_every_alias_and_shows_intervals() -> None:
    def row(version: str, aliases: tuple[str, ...], accuracy: float) -> Row:
        interval = {"test_accuracy": Interval(accuracy - 0.1, min(1.0, accuracy + 0.1))}
        return Row(
            pipeline="wine",
            model="svm",
            version=version,
            aliases=aliases,
            metrics={"test_accuracy": accuracy, **as_metrics(interval)},
            run_id=version,
        )

    rows = [row("3", (), 0.9), row("2", ("challenger",), 0.94), row("1", ("champion",), 0.95)]
    table = format_table(rows)
    assert "v2 challenger" in table and "v1 champion" in table
    assert "0.9400 [0.8400, 1.0000]" in table and "test_accuracy_ci_low" not in table
    assert rows[2].champion and not rows[1].champion


def test_epoch_line_names_the_epoch_of_how_many_and_each_metric() -> None:
    line = epoch_line(2, 22, {"val_loss": 0.25, "train_loss": 0.5, "val_accuracy": 0.9})
    assert line == "epoch 3/22: train_loss=0.5000 val_accuracy=0.9000 val_loss=0.2500"


def test_learning_curves_plot_is_a_png(tmp_path: Path) -> None:
    curves = {
        "train_loss": {0: 1.0, 1: 0.5},
        "val_loss": {0: 1.1, 1: 0.7},
        "val_accuracy": {0: 0.5},
    }
    plot_learning_curves(curves, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranking_metrics_carry_the_interval_of_their_mean_over_users(
    untrained_recommender: tuple[Any, Any],
) -> None:
    from mlaas.families.recommendation_ranking import ranking_metrics

    model, ratings = untrained_recommender
    metrics = ranking_metrics(model, ratings, 2, 4.0)
    for name in ("test_precision_at_2", "test_recall_at_2"):
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
