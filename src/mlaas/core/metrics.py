"""Each logged metric declared once, with which way is better.

A task declares every metric it logs (`mlaas.core.tasks`), built from the settings that name them
(`evaluate.top_k` is the k of `test_precision_at_5`); promotion reads a metric's direction from
that declaration. Nothing reads a direction off the shape of a name: a suffix test written for
`precision_at_10` reads `precision_at_5` as an error to lower.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Where a test metric's 95% interval is logged (`mlaas.core.confidence`): beside it, under its name.
LOW_SUFFIX = "_ci_low"
HIGH_SUFFIX = "_ci_high"
# A test metric's mean over the folds of cross-validation (`evaluate.cross_validate`).
TEST_PREFIX = "test_"
CROSS_VALIDATED_PREFIX = "cv_"


@dataclass(frozen=True)
class Metric:
    """A logged metric: its name, and whether a higher figure is the better one."""

    name: str
    higher_is_better: bool

    def interval_bounds(self) -> tuple[Metric, Metric]:
        """Its interval's bounds: each better the same way as the metric itself."""
        return (
            Metric(self.name + LOW_SUFFIX, self.higher_is_better),
            Metric(self.name + HIGH_SUFFIX, self.higher_is_better),
        )

    def cross_validated(self) -> Metric:
        """Its mean over cross-validation's folds (`test_rmse` -> `cv_rmse`)."""
        return Metric(
            self.name.replace(TEST_PREFIX, CROSS_VALIDATED_PREFIX, 1), self.higher_is_better
        )


MetricCatalog = Mapping[str, Metric]
"""Every metric a task logs, by name."""


def catalog(*groups: Iterable[Metric]) -> MetricCatalog:
    """The metrics by name; a name declared twice is a mistake in the declarations."""
    by_name: dict[str, Metric] = {}
    for group in groups:
        for metric in group:
            if metric.name in by_name:
                raise ValueError(f"metric {metric.name!r} is declared twice")
            by_name[metric.name] = metric
    return by_name


def with_intervals(metrics: Iterable[Metric]) -> tuple[Metric, ...]:
    """Each metric followed by its interval's bounds."""
    return tuple(bound for metric in metrics for bound in (metric, *metric.interval_bounds()))


def evaluated(metrics: Iterable[Metric]) -> tuple[Metric, ...]:
    """A task's test metrics as the evaluate stage logs them: each, its interval's bounds and
    its cross-validated mean."""
    tested = tuple(metrics)
    return (*with_intervals(tested), *(metric.cross_validated() for metric in tested))
