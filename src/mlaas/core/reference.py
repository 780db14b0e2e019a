"""What a model learned of its inputs: the serving contract and the monitor's reference.

One function per family describes instances (`Family.describe_inputs`): it is applied to the
training rows when the model is trained and to every instance the server answers, so the
monitor always compares like with like. A description is a few columns per instance (a table's
own values; a text's length, token count and share of unknown words; an image's intensities),
plus warnings for what lies outside what the model learned (a number past the training range,
a category never seen). Classifiers add the predicted class and its probability.

The out-of-distribution score of an instance is its largest robust z-score over the numeric
input columns: how many spreads (1.4826 median absolute deviations, a standard deviation for normal
data) the furthest column lies from the training median. It needs no model internals, so it is
the same for every family, and it catches what a confident classifier does not: an MNIST model
gives 98% to a blank image, whose intensities lie tens of spreads from any digit's. The
threshold is a quantile of the scores of the model's own test split and training rows
(`serve.ood_flag_share`), data the model was built on and measured with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from mlaas.core.model_card import Label

NUMBER: Literal["number"] = "number"
CATEGORY: Literal["category"] = "category"
ColumnKind = Literal["number", "category"]
Value = float | int | str | bool | None

REFERENCE_FILE = "reference.json"
"""Saved in the model folder, so it is hashed, registered and packaged with the version."""
REFERENCE_ROWS = 2000
"""Training rows kept in the reference: enough for the drift tests' power (KS at 0.5 σ needs
about a hundred), small enough to load with the model (a few hundred KB)."""

PREDICTED = "predicted"
CONFIDENCE = "confidence"
PREDICTED_VALUE = "predicted_value"
OOD_SCORE = "ood_score"
OOD_WARNING = "out of distribution"
"""How an out-of-distribution warning begins (the monitor tells it from a contract warning)."""


@dataclass(frozen=True)
class InputSummary:
    """The monitor's columns of a list of instances, and what each instance breaks."""

    columns: Mapping[str, Sequence[Value]]
    kinds: Mapping[str, ColumnKind]
    warnings: list[list[str]]
    """Per instance: each field outside what the model learned, with its value and the range."""
    embeddings: np.ndarray | None = field(default=None, compare=False)
    """(instances, dimensions), for texts and images: what embedding drift compares."""

    def row(self, index: int) -> dict[str, Value]:
        return {name: values[index] for name, values in self.columns.items()}


class Spread(BaseModel):
    """Where a numeric column sits in the training data, and how widely it varies."""

    model_config = ConfigDict(frozen=True)

    centre: float
    scale: float


class MonitorReference(BaseModel):
    """What the model learned of its inputs, saved with it (`REFERENCE_FILE`)."""

    model_config = ConfigDict(frozen=True)

    training_rows: int
    learned: dict[str, Any]
    """The family's own: ranges and category sets, a vocabulary, rating counts."""
    kinds: dict[str, ColumnKind]
    columns: dict[str, list[Value]]
    """The description of up to `REFERENCE_ROWS` training rows (drift's reference)."""
    embeddings: list[list[float]] | None = None
    test_predictions: list[Label | float]
    """What the model answered on its test split (prediction drift's reference)."""
    spreads: dict[str, Spread]
    test_ood_scores: list[float]
    """Sorted: the out-of-distribution scores of the test split and the training rows kept,
    to calibrate the threshold."""

    def ood_threshold(self, flag_share: float) -> float:
        """The score that `flag_share` of the test split exceeds."""
        if not self.test_ood_scores:
            return float("inf")
        return float(np.quantile(np.asarray(self.test_ood_scores), 1.0 - flag_share))


def with_predictions(
    summary: InputSummary, predictions: Sequence[Mapping[str, Any]], task: str
) -> InputSummary:
    """The summary plus the served predictions' columns: the class and its probability, or
    the value (prediction drift, and a classifier's confidence for the out-of-distribution
    score)."""
    columns: dict[str, Sequence[Value]] = dict(summary.columns)
    kinds: dict[str, ColumnKind] = dict(summary.kinds)
    if task == "classification":
        columns[PREDICTED] = [str(item["label"]) for item in predictions]
        columns[CONFIDENCE] = [max(item["probabilities"].values()) for item in predictions]
        kinds[PREDICTED], kinds[CONFIDENCE] = CATEGORY, NUMBER
    else:
        key = "rating" if task == "rating" else "value"
        columns[PREDICTED_VALUE] = [float(item[key]) for item in predictions]
        kinds[PREDICTED_VALUE] = NUMBER
    return InputSummary(columns, kinds, summary.warnings, summary.embeddings)


def spreads_of(
    columns: Mapping[str, Sequence[Value]], kinds: Mapping[str, str]
) -> dict[str, Spread]:
    """Median and robust spread of each numeric column (of the training rows)."""
    spreads = {}
    for name, kind in kinds.items():
        if kind != NUMBER or name in (PREDICTED_VALUE, CONFIDENCE):
            # Answers, not inputs: a classifier's confidence sits near 1 on most rows, so its
            # spread is tiny and any less sure answer would look like a far-away input.
            continue
        values = _numbers(columns[name])
        if not len(values):
            continue
        centre = float(np.median(values))
        scale = 1.4826 * float(np.median(np.abs(values - centre)))
        if scale == 0:
            # More than half the rows share one value (a pixel maximum of 255, a binary
            # feature): the standard deviation, and failing that a tiny spread, so that any
            # value the training data never had counts as far away.
            scale = float(values.std()) or 1e-6 * (abs(centre) + 1.0)
        spreads[name] = Spread(centre=centre, scale=scale)
    return spreads


def ood_scores(columns: Mapping[str, Sequence[Value]], spreads: Mapping[str, Spread]) -> np.ndarray:
    """Each instance's largest robust z-score over the numeric columns (0 with none)."""
    rows = len(next(iter(columns.values()), []))
    scores = np.zeros(rows)
    for name, spread in spreads.items():
        if name not in columns:
            continue
        values = _numbers(columns[name], keep_missing=True)
        distance = np.abs(values - spread.centre) / spread.scale
        scores = np.fmax(scores, np.nan_to_num(distance, nan=0.0))  # a missing value is no signal
    return scores


def _numbers(values: Sequence[Value], keep_missing: bool = False) -> np.ndarray:
    array = np.array([np.nan if value is None else float(value) for value in values], dtype=float)
    return array if keep_missing else array[~np.isnan(array)]
