"""Drift statistics (`mlaas.core.drift`): each test flags a real shift, leaves one distribution
alone, and a window too small to judge is reported, not raised."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from mlaas.core.confidence import Interval
from mlaas.core.drift import (
    Column,
    DatasetDrift,
    DriftThresholds,
    FeatureDrift,
    FeatureKind,
    LiveQuality,
    categorical_drift,
    dataset_drift,
    embedding_drift,
    feature_drift,
    live_accuracy,
    live_rmse,
    numeric_drift,
    prediction_drift,
    quality_fell,
)

# One distribution on both sides: a test at the 5% level flags 10 of 200 draws on average. At
# most 16 fails a 5% test 1 time in 50, and a 10% one 4 times in 5 (Evidently's chi-square of
# the window against the reference's shares flags 13% at 500 against 400 rows).
DRAWS, FALSE_ALARMS = 200, 16
# (reference rows, current rows, the method those sizes call for)
SMALL = (500, 300, "ks")
LARGE = (2000, 1200, "wasserstein")


def _categories(generator: np.random.Generator, rows: int, shares: list[float]) -> list[str]:
    return list(generator.choice(["a", "b", "c"], size=rows, p=shares))


def _false_alarms(compare: Callable[[np.random.Generator], FeatureDrift], draws: int) -> int:
    return sum(compare(np.random.default_rng(seed)).drifted for seed in range(draws))


@pytest.mark.parametrize(("reference_rows", "current_rows", "method"), [SMALL, LARGE])
def test_a_half_sigma_shift_in_a_number_is_flagged(
    reference_rows: int, current_rows: int, method: str
) -> None:
    generator = np.random.default_rng(1)
    result = numeric_drift(
        "x", generator.normal(size=reference_rows), generator.normal(0.5, 1, size=current_rows)
    )
    assert (result.method, result.drifted, result.judged) == (method, True, True)


@pytest.mark.parametrize(("reference_rows", "current_rows", "method"), [SMALL, LARGE])
def test_one_numeric_distribution_is_flagged_no_more_than_the_tests_level(
    reference_rows: int, current_rows: int, method: str
) -> None:
    def compare(generator: np.random.Generator) -> FeatureDrift:
        result = numeric_drift(
            "x", generator.normal(size=reference_rows), generator.normal(size=current_rows)
        )
        assert result.method == method
        return result

    assert _false_alarms(compare, DRAWS) <= FALSE_ALARMS


def test_a_large_reference_against_a_small_window_is_judged_by_a_p_value() -> None:
    # The normed Wasserstein distance of 300 rows from their own distribution passes 0.1 in
    # about 1 window in 5: a large reference alone must not choose it.
    generator = np.random.default_rng(2)
    result = numeric_drift("x", generator.normal(size=5000), generator.normal(size=300))
    assert result.method == "ks"


def test_the_wasserstein_distance_is_in_the_references_standard_deviations() -> None:
    generator = np.random.default_rng(3)
    reference, current = generator.normal(size=5000), generator.normal(0.3, 1, size=1500)
    in_metres = numeric_drift("x", reference, current)
    in_millimetres = numeric_drift("x", reference * 1000, current * 1000)
    assert in_millimetres.score == pytest.approx(in_metres.score)
    assert in_metres.detail["distance"] * 1000 == pytest.approx(in_millimetres.detail["distance"])


def test_a_constant_reference_does_not_divide_by_zero() -> None:
    result = numeric_drift("x", np.full(2000, 7.0), np.full(1500, 8.0))
    assert result.score is not None and np.isfinite(result.score)
    assert result.drifted


def test_missing_numbers_are_dropped_before_comparing() -> None:
    generator = np.random.default_rng(4)
    reference, current = generator.normal(size=200), generator.normal(size=100)
    with_gaps = numeric_drift("x", [*reference, None, float("nan")], [*current, None])
    assert with_gaps == numeric_drift("x", reference, current)
    assert (with_gaps.reference_rows, with_gaps.current_rows) == (200, 100)


@pytest.mark.parametrize(
    ("reference_rows", "current_rows", "method"),
    [(500, 400, "chi2"), (2000, 1200, "jensenshannon")],
)
@pytest.mark.parametrize(
    "shifted", [[0.4, 0.6, 0.0], [0.42, 0.28, 0.30]], ids=["swapped shares", "new category"]
)
def test_a_shift_in_category_shares_is_flagged(
    reference_rows: int, current_rows: int, method: str, shifted: list[float]
) -> None:
    generator = np.random.default_rng(5)
    result = categorical_drift(
        "colour",
        _categories(generator, reference_rows, [0.6, 0.4, 0.0]),
        _categories(generator, current_rows, shifted),
    )
    assert (result.method, result.drifted) == (method, True)


@pytest.mark.parametrize(("reference_rows", "current_rows"), [(500, 400), (2000, 1200)])
def test_one_categorical_distribution_is_flagged_no_more_than_the_tests_level(
    reference_rows: int, current_rows: int
) -> None:
    shares = [0.5, 0.3, 0.2]
    assert (
        _false_alarms(
            lambda generator: categorical_drift(
                "colour",
                _categories(generator, reference_rows, shares),
                _categories(generator, current_rows, shares),
            ),
            DRAWS,
        )
        <= FALSE_ALARMS
    )


def test_one_stray_category_the_reference_never_had_is_counted_not_flagged() -> None:
    generator = np.random.default_rng(6)
    current = [*_categories(generator, 399, [0.6, 0.4, 0.0]), "never seen"]
    result = categorical_drift("colour", _categories(generator, 500, [0.6, 0.4, 0.0]), current)
    assert result.judged and not result.drifted


def test_bools_and_integers_are_categories() -> None:
    flags = categorical_drift("flag", [True, False] * 100, [True] * 90 + [False] * 10)
    codes = categorical_drift("code", [1, 2, 3] * 50, [1, 2, 3] * 30)
    assert (flags.drifted, codes.drifted) == (True, False)


def test_a_mean_shift_in_embeddings_is_flagged_and_its_distance_reported() -> None:
    generator = np.random.default_rng(7)
    shift = np.full(16, 0.3)
    result = embedding_drift(
        "text", generator.normal(size=(200, 16)), generator.normal(size=(200, 16)) + shift, seed=0
    )
    assert result.drifted and result.score is not None and result.score > 0.55
    # The sample means are off by about 0.1 a dimension: 0.3·4 = 1.2 give or take 0.4.
    assert result.detail["mean_distance"] == pytest.approx(np.linalg.norm(shift), abs=0.4)


def test_one_embedding_distribution_is_not_flagged_in_19_of_20_draws() -> None:
    # 20 draws only, to stay fast: a classifier is fitted in each. (A fixed AUC of 0.55 on 100
    # held-out rows a side flags 1 window in 10; the chance level keeps it to 1 in 20.)
    assert (
        _false_alarms(
            lambda generator: embedding_drift(
                "text",
                generator.normal(size=(200, 16)),
                generator.normal(size=(200, 16)),
                seed=int(generator.integers(2**31)),
            ),
            20,
        )
        <= 1
    )


def test_embeddings_of_different_widths_are_refused() -> None:
    generator = np.random.default_rng(8)
    with pytest.raises(ValueError, match="16 dimensions, current ones 8"):
        embedding_drift(
            "text", generator.normal(size=(50, 16)), generator.normal(size=(50, 8)), seed=0
        )


def _columns(shifted: set[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    generator = np.random.default_rng(9)
    names = ("a", "b", "c", "d")
    reference = {name: generator.normal(size=300) for name in names}
    current = {name: generator.normal(3.0 if name in shifted else 0.0, 1, 200) for name in names}
    return reference, current


@pytest.mark.parametrize(
    ("shifted", "drifted"), [({"a", "b"}, True), ({"a"}, False)], ids=["2 of 4", "1 of 4"]
)
def test_a_data_set_drifts_when_half_its_features_do(shifted: set[str], drifted: bool) -> None:
    reference, current = _columns(shifted)
    result = dataset_drift(reference, current, dict.fromkeys(reference, "number"))
    assert [feature.drifted for feature in result.features] == [n in shifted for n in "abcd"]
    assert (result.share, result.drifted) == (len(shifted) / 4, drifted)


def test_the_share_counts_only_the_features_that_could_be_judged() -> None:
    reference, current = _columns({"a"})
    current["c"], current["d"] = current["c"][:5], np.array([])
    result = dataset_drift(reference, current, dict.fromkeys(reference, "number"))
    assert [feature.judged for feature in result.features] == [True, True, False, False]
    assert (result.share, result.drifted) == (0.5, True)


def test_prediction_drift_compares_the_served_classes_with_the_test_splits() -> None:
    reference = ["cat", "dog"] * 150
    steady = prediction_drift(reference, ["dog", "cat"] * 100, "category")
    skewed = prediction_drift(reference, ["cat"] * 170 + ["dog"] * 30, "category")
    assert (steady.feature, steady.method, steady.drifted, skewed.drifted) == (
        "prediction",
        "chi2",
        False,
        True,
    )


def test_live_accuracys_interval_holds_the_true_accuracy_19_times_in_20() -> None:
    covered = 0
    for seed in range(100):
        right = np.random.default_rng(seed).random(150) < 0.8
        quality = live_accuracy(list(np.where(right, "cat", "dog")), ["cat"] * 150)
        assert quality.value == right.mean() and quality.count == 150
        assert quality.interval is not None
        covered += quality.interval.low <= 0.8 <= quality.interval.high
    assert 90 <= covered <= 99


def test_live_rmse_is_seeded_and_leaves_out_pairs_without_feedback() -> None:
    generator = np.random.default_rng(10)
    actual = generator.normal(size=80)
    predicted = actual + generator.normal(0, 2, size=80)
    quality = live_rmse([*predicted, 1.0], [*actual, float("nan")], seed=0)
    assert quality.count == 80
    assert quality.value == pytest.approx(np.sqrt(np.mean(np.square(predicted - actual))))
    assert quality.value is not None and quality.interval is not None
    assert quality.interval.low < quality.value < quality.interval.high
    assert quality == live_rmse(predicted, actual, seed=0)


def _quality(metric: str, value: float, low: float, high: float) -> LiveQuality:
    return LiveQuality(
        metric=metric,
        higher_is_better=metric == "accuracy",
        value=value,
        interval=Interval(low, high),
        count=100,
    )


@pytest.mark.parametrize(
    ("live", "champion", "fell"),
    [
        (_quality("accuracy", 0.78, 0.70, 0.84), 0.95, True),
        # 17 of 20 right: 85% is more than 0.05 below the champion's 95%, but the interval
        # reaches 94.8%: a 95% model gets 17 of 20 often enough.
        (live_accuracy(["y"] * 17 + ["n"] * 3, ["y"] * 20), 0.95, False),
        (_quality("accuracy", 0.92, 0.91, 0.93), 0.95, False),  # within the tolerance
        (_quality("rmse", 3.0, 2.5, 3.5), 2.0, True),
        (_quality("rmse", 2.6, 1.9, 3.4), 2.0, False),  # few answers
        (_quality("rmse", 2.15, 2.1, 2.2), 2.0, False),  # within the tolerance
        (_quality("rmse", 1.5, 1.2, 1.8), 2.0, False),
    ],
    ids=[
        "accuracy fell",
        "accuracy on few answers",
        "accuracy within tolerance",
        "rmse rose",
        "rmse on few answers",
        "rmse within tolerance",
        "rmse improved",
    ],
)
def test_quality_fell_when_even_the_intervals_best_bound_is_past_the_tolerance(
    live: LiveQuality, champion: float, fell: bool
) -> None:
    tolerance = 0.05 if live.higher_is_better else 0.2
    assert quality_fell(live, champion, tolerance) is fell


@pytest.mark.parametrize("kind", ["number", "category", "embedding"])
@pytest.mark.parametrize("current_rows", [0, 5])
def test_a_window_too_small_to_judge_is_reported_not_raised(
    kind: FeatureKind, current_rows: int
) -> None:
    generator = np.random.default_rng(11)
    makers: dict[str, Callable[[int], Column]] = {
        "number": lambda rows: generator.normal(size=rows),
        "category": lambda rows: _categories(generator, rows, [0.5, 0.5, 0.0]),
        "embedding": lambda rows: generator.normal(size=(rows, 4)),
    }
    columns = makers[kind]
    result = feature_drift("f", kind, columns(300), columns(current_rows))
    assert (result.judged, result.drifted, result.score) == (False, False, None)
    assert result.current_rows == current_rows and "not enough data" in (result.note or "")


def test_no_data_at_all_is_a_record_too() -> None:
    drift = dataset_drift({"x": [1.0] * 50}, {}, {"x": "number"})
    quality = live_accuracy([], [])
    assert (drift.share, drift.drifted) == (None, False)
    assert (quality.value, quality.count, quality_fell(quality, 0.9)) == (None, 0, False)


def test_results_serialise_to_json_and_read_back() -> None:
    reference, current = _columns({"a"})
    drift = dataset_drift(reference, current, dict.fromkeys(reference, "number"))
    quality = live_accuracy(["cat", "dog"], ["cat", "cat"])
    record = json.loads(
        json.dumps({"data": drift.model_dump(mode="json"), "quality": quality.model_dump()})
    )
    assert DatasetDrift.model_validate(record["data"]) == drift
    assert LiveQuality.model_validate(record["quality"]) == quality


def test_thresholds_are_settings_with_evidentlys_defaults() -> None:
    thresholds = DriftThresholds()
    assert (thresholds.ks_p_value, thresholds.wasserstein, thresholds.domain_classifier_auc) == (
        0.05,
        0.1,
        0.55,
    )
    with pytest.raises(ValueError, match="extra"):
        DriftThresholds.model_validate({"unknown": 1})


def _texts(words: list[str], count: int, seed: int) -> list[str]:
    generator = np.random.default_rng(seed)
    return [" ".join(generator.choice(words, size=12)) for _ in range(count)]


SPORT = ["match", "goal", "team", "season", "coach", "league", "player", "score", "win", "cup"]
MONEY = ["shares", "bank", "profit", "market", "rates", "investor", "growth", "price", "fund"]


def test_texts_on_another_subject_drift_by_their_summaries_and_the_same_do_not() -> None:
    from mlaas.families.descriptions import describe_texts, learn_texts

    training = _texts(SPORT + MONEY[:2], 400, seed=0)
    learned = learn_texts(training)
    reference = describe_texts(training, learned)
    assert reference.embeddings is not None

    def compared(texts: list[str], seed: int) -> tuple[bool, bool]:
        current = describe_texts(texts, learned)
        assert current.embeddings is not None
        words = numeric_drift(
            "unknown_word_share",
            np.asarray(reference.columns["unknown_word_share"]),
            np.asarray(current.columns["unknown_word_share"]),
        )
        vectors = embedding_drift("embedding", reference.embeddings, current.embeddings, seed)
        return words.drifted, vectors.drifted

    assert compared(_texts(MONEY, 200, seed=1), seed=1) == (True, True)
    calm = [compared(_texts(SPORT + MONEY[:2], 200, seed=10 + n), seed=n) for n in range(20)]
    assert sum(vectors for _, vectors in calm) <= 1  # embeddings: 19 of 20 calm windows pass
    assert sum(words for words, _ in calm) <= 3
