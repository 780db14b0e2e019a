from pathlib import Path

import numpy as np

from mlaas.core.tasks import classification_report_for
from mlaas.stages.evaluate_plots import plot_confusion_matrix


def test_metrics_and_confusion_matrix_of_known_predictions(tmp_path: Path) -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 1, 2, 0]]  # two mistakes out of six
    report = classification_report_for(targets, probabilities, ["a", "b", "c"])
    assert report["metrics"]["test_accuracy"] == 4 / 6
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["per_class"]["b"]["recall"] == 1.0 and report["per_class"]["a"]["recall"] == 0.5
    assert 0 < report["metrics"]["test_f1_macro"] < 1
    plot_confusion_matrix(report["confusion"], ["a", "b", "c"], tmp_path / "cm.png")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
