"""95% confidence intervals of test metrics, and when a test split is too small to trust.

A metric measured on n test rows is one draw: another split of the same size would give another
figure. Accuracy is a proportion of independent right-or-wrong answers, so its interval is
Wilson's score interval, which stays inside [0, 1] and is not [1, 1] for 9 of 9 right (the
normal approximation's is). Every other metric (macro F1, RMSE, R², precision@k) has no closed
form that holds on small splits: its interval is a percentile bootstrap over the test rows,
seeded, so the same model and split always get the same interval.

Intervals are logged beside their metric as `<metric>_ci_low` and `<metric>_ci_high`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from mlaas.core.metrics import HIGH_SUFFIX, LOW_SUFFIX

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
RESOLUTION = 0.05
"""The smallest difference a test split must resolve, as a share of the metric's scale (1 for
scores in [0, 1], the figure itself for errors in the target's units): 5 points of accuracy.
A split whose interval reaches further than this either side of the figure cannot tell a model
from one that is 5 points better or worse: the two could swap places on another split."""
# Resampled rows held in memory at once (indices and the values gathered with them).
_BOOTSTRAP_CELLS = 2_000_000

Statistics = Callable[[np.ndarray], Mapping[str, np.ndarray]]
"""Row indices of shape (resamples, rows) -> each metric's value on each resample."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval of a proportion `successes / trials`."""
    if trials == 0:
        return Interval(0.0, 1.0)  # nothing observed: anything is possible
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    spread /= 1 + z * z / trials
    # Clipped: at 0 or n successes the bound equals the share, up to rounding.
    return Interval(max(0.0, centre - spread), min(1.0, centre + spread))


def bootstrap_intervals(
    statistics: Statistics,
    rows: int,
    seed: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:
    """Percentile intervals of every metric `statistics` computes, from the same resamples.

    A resample where a metric is undefined (R² of rows that all share one target) is left out
    of that metric's interval.
    """
    generator = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CELLS // max(rows, 1))
    values: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        for name, value in statistics(generator.integers(0, rows, size=(count, rows))).items():
            values.setdefault(name, []).append(np.asarray(value, dtype=np.float64))
    tail = (1 - confidence) / 2
    intervals = {}
    for name, parts in values.items():
        finite = np.concatenate(parts)
        finite = finite[np.isfinite(finite)]
        if finite.size:
            low, high = np.quantile(finite, [tail, 1 - tail])
            intervals[name] = Interval(float(low), float(high))
    return intervals


def mean_interval(values: np.ndarray, seed: int) -> Interval | None:
    """The bootstrap interval of the mean of per-unit values (per-user precision@k, say)."""
    if values.size == 0:
        return None
    return bootstrap_intervals(lambda rows: {"mean": values[rows].mean(axis=1)}, values.size, seed)[
        "mean"
    ]


def as_metrics(intervals: Mapping[str, Interval]) -> dict[str, float]:
    """{"test_accuracy": Interval(...)} -> {"test_accuracy_ci_low": ..., "..._ci_high": ...}."""
    metrics = {}
    for name, interval in intervals.items():
        metrics[name + LOW_SUFFIX] = interval.low
        metrics[name + HIGH_SUFFIX] = interval.high
    return metrics


def is_bound(metric: str) -> bool:
    """Whether `metric` is an interval's bound rather than a measured figure."""
    return metric.endswith((LOW_SUFFIX, HIGH_SUFFIX))


def measured_metric(metric: str) -> str:
    """The metric an interval bound belongs to (`test_r2_ci_low` -> `test_r2`)."""
    for suffix in (LOW_SUFFIX, HIGH_SUFFIX):
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


def interval_of(metrics: Mapping[str, float], metric: str) -> Interval | None:
    low, high = metrics.get(metric + LOW_SUFFIX), metrics.get(metric + HIGH_SUFFIX)
    return Interval(low, high) if low is not None and high is not None else None


def with_interval(metrics: Mapping[str, float], metric: str) -> str:
    """`test_accuracy=0.9760 (95% CI 0.9581-0.9867)`, or without the brackets if it has none."""
    shown = f"{metric}={metrics[metric]:.4f}"
    interval = interval_of(metrics, metric)
    if interval is None:
        return shown
    return f"{shown} ({CONFIDENCE:.0%} CI {interval.low:.4f}-{interval.high:.4f})"


def too_small_warning(
    metrics: Mapping[str, float],
    metric: str,
    scale: float,
    min_improvement: float,
    test_rows: int | None,
) -> str | None:
    """Why the test split cannot tell models apart on `metric`, or None when it can.

    It can when the interval reaches at most `RESOLUTION * scale` either side of the figure, or
    the promotion margin where that is larger: a user who promotes only on gains above the
    margin needs the split to resolve the margin, not finer. (The margin alone cannot be the
    bound: it is 0 by default, which no finite split resolves.)
    """
    interval = interval_of(metrics, metric)
    if interval is None:
        return None
    bound = max(RESOLUTION * scale, min_improvement)
    if interval.half_width <= bound:
        return None
    rows = f" ({test_rows} rows)" if test_rows is not None else ""
    return (
        f"the test split{rows} is too small to tell models apart on {metric}: its "
        f"{CONFIDENCE:.0%} confidence interval {interval.low:.4f}-{interval.high:.4f} reaches "
        f"±{interval.half_width:.4f} around {metrics[metric]:.4f}, more than the ±{bound:.4g} "
        "a comparison must resolve; give the test split more rows (a larger split.test_size, "
        "or more data) before trusting this figure or a promotion decided on it"
    )
