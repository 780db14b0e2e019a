"""Drift: whether what a model server saw (current) still looks like what the model learned
(reference), and whether its answers are still as good as its test split said.

The tests are the ones Evidently chooses, on scipy and numpy: a test's p-value (two-sample
Kolmogorov–Smirnov for numbers, chi-square for categories) on small samples, a distance (the
normed Wasserstein distance, the Jensen–Shannon distance) past a size on large ones, where a
p-value flags differences too small to matter: a test's power grows with the rows, an effect
does not. Unlike Evidently, "large" means both sides, not the reference alone (see
`DriftThresholds.large_sample_rows`). Texts and images are compared by their embeddings,
through a classifier that tries to tell the two windows apart.

A feature with fewer than `min_rows` usable values on either side is not judged: its result
says so (`judged=False`, `drifted=False`, a `note`) instead of raising, so a quiet hour's
window is a record, not an error.

Results are frozen pydantic models: `model_dump(mode="json")` is the `drift.json` record.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mlaas.core.confidence import Interval, bootstrap_intervals, wilson_interval

FeatureKind = Literal["number", "category", "embedding"]
Method = Literal["ks", "wasserstein", "chi2", "jensenshannon", "domain_classifier"]
Column = Sequence[Any] | np.ndarray

# Evidently's floor on the reference's standard deviation when norming the Wasserstein distance:
# a constant reference would otherwise divide by 0.
_MIN_STD = 0.001
# Rows per side the domain classifier sees (half to train, half to score): enough for its AUC
# to be precise to about a hundredth, few enough that 384 dimensions take about a second.
_CLASSIFIER_ROWS = 2000


class DriftThresholds(BaseModel):
    """When a feature, a data set or the embeddings count as drifted (Evidently's defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_rows: int = Field(30, ge=2)
    """Fewer usable values than this on either side: the feature is not judged."""
    large_sample_rows: int = Field(1000, ge=1)
    """When both sides have more rows than this, a distance decides, not a p-value. Evidently
    looks at the reference only, but a test's power is set by the smaller side (a 5000-row
    reference and a 300-row window are about as sensitive as 300 rows against the truth), and
    the distances are noisy on a small window: the normed Wasserstein distance between a
    300-row sample and its own distribution exceeds 0.1 in 18% of windows, 38% at 200 rows,
    under 1% at 1000."""
    ks_p_value: float = Field(0.05, gt=0, lt=1)
    wasserstein: float = Field(0.1, gt=0)
    """In the reference's standard deviations."""
    chi2_p_value: float = Field(0.05, gt=0, lt=1)
    jensenshannon: float = Field(0.1, gt=0, le=1)
    """Natural-log base, as Evidently (and scipy by default): at most √ln 2 ≈ 0.83."""
    domain_classifier_auc: float = Field(0.55, ge=0.5, lt=1)
    domain_classifier_chance: float = Field(0.95, ge=0.5, lt=1)
    """... or the AUC a classifier guessing at random reaches with this probability on as many
    rows, when that is higher (small windows): Evidently's `quantile_probability`."""
    drifted_share: float = Field(0.5, gt=0, le=1)
    """The data set drifted when at least this share of its judged features did."""


DEFAULT_THRESHOLDS = DriftThresholds()


class FeatureDrift(BaseModel):
    """One feature's comparison: the method, its figure, the threshold and the verdict."""

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: FeatureKind
    method: Method
    score: float | None
    """The p-value (ks, chi2), the distance (wasserstein, jensenshannon) or the ROC AUC
    (domain_classifier); None when not judged."""
    threshold: float
    drifted: bool
    judged: bool
    reference_rows: int
    current_rows: int
    note: str | None = None
    """Why the feature was not judged."""
    detail: dict[str, float] = Field(default_factory=dict)
    """Figures beside the score: the test statistic, the raw distance, the mean embeddings'
    distance."""


class DatasetDrift(BaseModel):
    """Every feature's comparison and whether enough of them drifted."""

    model_config = ConfigDict(frozen=True)

    features: tuple[FeatureDrift, ...]
    share: float | None
    """Drifted features over judged ones; None when none could be judged."""
    threshold: float
    drifted: bool


class LiveQuality(BaseModel):
    """A metric of the served model on the answers that got feedback, with its 95% interval."""

    model_config = ConfigDict(frozen=True)

    metric: str
    higher_is_better: bool
    value: float | None
    """None with no feedback."""
    interval: Interval | None
    count: int


def feature_drift(
    feature: str,
    kind: FeatureKind,
    reference: Column,
    current: Column,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    seed: int = 0,
) -> FeatureDrift:
    """The comparison `kind` calls for (`seed` matters to embeddings only)."""
    if kind == "number":
        return numeric_drift(feature, reference, current, thresholds)
    if kind == "category":
        return categorical_drift(feature, reference, current, thresholds)
    return embedding_drift(feature, reference, current, seed, thresholds)


def numeric_drift(
    feature: str,
    reference: Column,
    current: Column,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
) -> FeatureDrift:
    """KS on a small reference, the normed Wasserstein distance on a large one."""
    from scipy.stats import ks_2samp, wasserstein_distance

    # Missing values (None, NaN) and infinities are dropped: they have no place on the axis, and
    # how many are missing is the validation gate's question, not the distribution's.
    ref, cur = _finite(reference), _finite(current)
    small = min(ref.size, cur.size) <= thresholds.large_sample_rows
    method: Method = "ks" if small else "wasserstein"
    threshold = thresholds.ks_p_value if small else thresholds.wasserstein
    base = _Base(feature, "number", method, threshold, ref.size, cur.size)
    if (unjudged := base.too_few(thresholds.min_rows)) is not None:
        return unjudged
    if small:
        test = ks_2samp(ref, cur)
        p_value = float(test.pvalue)
        return base.verdict(p_value, p_value < threshold, statistic=float(test.statistic))
    raw = float(wasserstein_distance(ref, cur))
    # Evidently's `wasserstein_distance_norm`: the distance in the reference's standard
    # deviations, so one threshold fits every feature's units.
    normed = raw / max(float(ref.std()), _MIN_STD)
    return base.verdict(normed, normed > threshold, distance=raw)


def categorical_drift(
    feature: str,
    reference: Column,
    current: Column,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
) -> FeatureDrift:
    """Chi-square on a small reference, the Jensen–Shannon distance on a large one.

    Strings, bools and integers are categories by their value; missing ones (None, NaN) are
    dropped, as for numbers.
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    ref, cur = _categories(reference), _categories(current)
    small = min(len(ref), len(cur)) <= thresholds.large_sample_rows
    method: Method = "chi2" if small else "jensenshannon"
    threshold = thresholds.chi2_p_value if small else thresholds.jensenshannon
    base = _Base(feature, "category", method, threshold, len(ref), len(cur))
    if (unjudged := base.too_few(thresholds.min_rows)) is not None:
        return unjudged
    ref_counts, cur_counts = Counter(ref), Counter(cur)
    # The union of both sides' categories, each counted 0 where it was not seen. No smoothing
    # is needed: chi-square's expected counts come from both sides pooled, so a category seen
    # on one side only still expects a positive count on each; and the Jensen–Shannon distance
    # compares each share with the two sides' mean, never dividing by a share that is 0.
    categories = [*ref_counts, *(category for category in cur_counts if category not in ref_counts)]
    table = np.array([[counts[c] for c in categories] for counts in (ref_counts, cur_counts)])
    if not small:
        distance = float(jensenshannon(table[0], table[1]))  # natural log: Evidently's base
        return base.verdict(distance, distance > threshold)
    if len(categories) == 1:
        return base.verdict(1.0, False, statistic=0.0)  # one category on both sides: no change
    # A test of homogeneity of the two samples, not Evidently's goodness of fit of the current
    # counts to the reference's shares: that one takes the reference's shares as exact, and
    # with 500 reference and 300 current rows of one distribution it flags 13% of windows,
    # not 5%. On a reference much larger than the window the two agree.
    test = chi2_contingency(table, correction=False)
    p_value = float(test.pvalue)
    return base.verdict(p_value, p_value < threshold, statistic=float(test.statistic))


def embedding_drift(
    feature: str,
    reference: Column,
    current: Column,
    seed: int,
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
) -> FeatureDrift:
    """Whether a classifier tells reference from current embeddings (n, d) apart: its ROC AUC
    on held-out rows, and beside it the distance between the two mean embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref, cur = _vectors(reference), _vectors(current)
    threshold = thresholds.domain_classifier_auc
    base = _Base(feature, "embedding", "domain_classifier", threshold, len(ref), len(cur))
    if (unjudged := base.too_few(thresholds.min_rows)) is not None:
        return unjudged
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(
            f"{feature}: reference embeddings have {ref.shape[1]} dimensions, current ones "
            f"{cur.shape[1]}; both must come from the same model's summaries"
        )
    mean_distance = float(np.linalg.norm(ref.mean(axis=0) - cur.mean(axis=0)))
    generator = np.random.default_rng(seed)
    ref, cur = _sample(ref, generator), _sample(cur, generator)
    rows = np.vstack([ref, cur])
    sides = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    # One seeded half to train on, the other to score, as Evidently does. Not cross-validation:
    # the AUC of held-out rows, scored by a model that never saw them, is distributed as
    # Mann–Whitney's statistic when the windows do not differ, so its chance level below is
    # exact; the mean AUC of 5 folds varies half as much again (the folds share training rows),
    # and at 200 rows a side passes 0.55 in 11% of windows of one distribution.
    train_rows, test_rows, train_sides, test_sides = train_test_split(
        rows, sides, test_size=0.5, stratify=sides, random_state=seed
    )
    # Newton steps on a (dimensions × dimensions) Hessian: a handful for an embedding's few
    # hundred dimensions, where lbfgs takes dozens of slower ones.
    classifier = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky"))
    classifier.fit(train_rows, train_sides)
    auc = _auc(classifier.decision_function(test_rows), test_sides)
    chance = _chance_auc(
        int(test_sides.sum()),
        int(len(test_sides) - test_sides.sum()),
        thresholds.domain_classifier_chance,
    )
    # The larger of the two: on a small window chance alone passes 0.55 (at 100 held-out rows
    # a side, 1 window in 10); on a large one 0.55 is the smallest difference worth a flag.
    threshold = max(threshold, chance)
    return replace(base, threshold=threshold).verdict(
        auc, auc > threshold, mean_distance=mean_distance, chance_auc=chance
    )


def dataset_drift(
    reference: Mapping[str, Column],
    current: Mapping[str, Column],
    kinds: Mapping[str, FeatureKind],
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    seed: int = 0,
) -> DatasetDrift:
    """Each feature of `kinds` compared; drifted when enough of the judged ones drifted.

    An embedding column holds one vector per row and counts as one feature. A column missing
    from either side counts as empty there: the feature is reported, not judged.
    """
    features = tuple(
        feature_drift(name, kind, reference.get(name, ()), current.get(name, ()), thresholds, seed)
        for name, kind in kinds.items()
    )
    judged = [feature for feature in features if feature.judged]
    # The share of judged features only: a feature with too few values says nothing either way,
    # so it must neither dilute the share nor count as drifted.
    share = sum(feature.drifted for feature in judged) / len(judged) if judged else None
    drifted = share is not None and share >= thresholds.drifted_share
    return DatasetDrift(
        features=features, share=share, threshold=thresholds.drifted_share, drifted=drifted
    )


def prediction_drift(
    reference: Column,
    current: Column,
    kind: Literal["number", "category"],
    thresholds: DriftThresholds = DEFAULT_THRESHOLDS,
    feature: str = "prediction",
) -> FeatureDrift:
    """The served predictions (classes or values) against the test split's predictions."""
    return feature_drift(feature, kind, reference, current, thresholds)


def live_accuracy(predicted: Sequence[object], actual: Sequence[object]) -> LiveQuality:
    """The share of fed-back answers that were right, with Wilson's interval."""
    pairs = list(zip(predicted, actual, strict=True))
    if not pairs:
        return LiveQuality(
            metric="accuracy", higher_is_better=True, value=None, interval=None, count=0
        )
    right = sum(1 for guess, truth in pairs if guess == truth)
    return LiveQuality(
        metric="accuracy",
        higher_is_better=True,
        value=right / len(pairs),
        interval=wilson_interval(right, len(pairs)),
        count=len(pairs),
    )


def live_rmse(predicted: Column, actual: Column, seed: int) -> LiveQuality:
    """The root mean squared error of fed-back answers, with a seeded bootstrap interval.

    A pair with a missing or non-finite value on either side is left out.
    """
    guesses = np.asarray(predicted, dtype=np.float64)
    truths = np.asarray(actual, dtype=np.float64)
    if guesses.shape != truths.shape:
        raise ValueError(f"{guesses.size} predictions but {truths.size} actual values")
    errors = (guesses - truths)[np.isfinite(guesses) & np.isfinite(truths)]
    if not errors.size:
        return LiveQuality(
            metric="rmse", higher_is_better=False, value=None, interval=None, count=0
        )
    squared = np.square(errors)
    interval = bootstrap_intervals(
        lambda rows: {"rmse": np.sqrt(squared[rows].mean(axis=1))}, squared.size, seed
    )["rmse"]
    return LiveQuality(
        metric="rmse",
        higher_is_better=False,
        value=float(np.sqrt(squared.mean())),
        interval=interval,
        count=int(errors.size),
    )


def quality_fell(live: LiveQuality, champion_metric: float, tolerance: float = 0.0) -> bool:
    """Whether the live metric is worse than the champion's test figure by more than `tolerance`
    (in the metric's units), judged by the interval's bound nearest the champion."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be at least 0, not {tolerance}")
    if live.interval is None:
        return False  # no feedback yet: nothing fell
    # The interval's optimistic bound, not the figure: 20 answers with 17 right read 85%
    # against a champion's 95%, yet 95% right would give 17 of 20 often enough. Flagging only
    # when even the bound is worse keeps small samples from flagging by chance.
    if live.higher_is_better:
        return live.interval.high < champion_metric - tolerance
    return live.interval.low > champion_metric + tolerance


@dataclass(frozen=True)
class _Base:
    """What every result of one comparison shares, before its figure is known."""

    feature: str
    kind: FeatureKind
    method: Method
    threshold: float
    reference_rows: int
    current_rows: int

    def too_few(self, min_rows: int) -> FeatureDrift | None:
        """The not-judged result when a side has fewer than `min_rows` values, else None."""
        short = [
            f"the {side} has {rows}"
            for side, rows in (("reference", self.reference_rows), ("current", self.current_rows))
            if rows < min_rows
        ]
        if not short:
            return None
        note = f"not enough data: {' and '.join(short)} usable values, fewer than {min_rows}"
        return FeatureDrift(**asdict(self), score=None, drifted=False, judged=False, note=note)

    def verdict(self, score: float, drifted: bool, **detail: float) -> FeatureDrift:
        return FeatureDrift(
            **asdict(self), score=score, drifted=bool(drifted), judged=True, detail=detail
        )


def _auc(scores: np.ndarray, sides: np.ndarray) -> float:
    """ROC AUC as Mann–Whitney's U of the current rows' scores over the pairs (ties count half)."""
    from scipy.stats import rankdata

    current = sides == 1
    positives, negatives = int(current.sum()), int((~current).sum())
    u = rankdata(scores)[current].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def _chance_auc(positives: int, negatives: int, probability: float) -> float:
    """The AUC that random scores stay under with `probability`: Mann–Whitney's U over
    `positives * negatives` is the AUC, and is nearly normal past a few dozen rows."""
    spread = math.sqrt((positives + negatives + 1) / (12 * positives * negatives))
    return 0.5 + NormalDist().inv_cdf(probability) * spread


def _finite(values: Column) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()  # None becomes NaN
    return array[np.isfinite(array)]


def _categories(values: Column) -> list[Any]:
    return [value for value in values if not _missing(value)]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN != NaN


def _vectors(values: Column) -> np.ndarray:
    """(rows, dimensions) floats, without rows that hold a missing or non-finite value."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, array.shape[-1] if array.ndim == 2 else 0)
    if array.ndim != 2:
        raise ValueError(f"embeddings must be (rows, dimensions), not of shape {array.shape}")
    return array[np.isfinite(array).all(axis=1)]


def _sample(rows: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    if len(rows) <= _CLASSIFIER_ROWS:
        return rows
    return rows[np.sort(generator.choice(len(rows), _CLASSIFIER_ROWS, replace=False))]
