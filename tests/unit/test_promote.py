import pytest

from mlaas.core.errors import SettingsError
from mlaas.core.settings import EvaluateSettings, PromoteSettings
from mlaas.stages.promote import Rule, decide, rule_for
from mlaas.stores.registry import CHALLENGER, CHAMPION

EVALUATE = EvaluateSettings()
ACCURACY = Rule("test_accuracy", higher_is_better=True, min_improvement=0.0)


def test_the_first_version_becomes_champion() -> None:
    decision = decide(0.5, None, None, ACCURACY)
    assert decision.promoted and decision.alias == CHAMPION


def test_a_better_version_becomes_champion() -> None:
    decision = decide(0.95, 0.90, 1, ACCURACY)
    assert decision.promoted and decision.alias == CHAMPION
    assert "beats" in decision.reason and "v1" in decision.reason


def test_an_equal_or_worse_version_is_only_a_challenger() -> None:
    for candidate in (0.90, 0.80):
        decision = decide(candidate, 0.90, 1, ACCURACY)
        assert not decision.promoted and decision.alias == CHALLENGER


def test_the_margin_must_be_exceeded() -> None:
    rule = Rule("test_accuracy", higher_is_better=True, min_improvement=0.01)
    assert not decide(0.905, 0.90, 1, rule).promoted
    assert decide(0.92, 0.90, 1, rule).promoted


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    rule = Rule("test_rmse", higher_is_better=False, min_improvement=0.0)
    assert decide(0.8, 0.9, 1, rule).promoted
    assert not decide(1.0, 0.9, 1, rule).promoted


def test_each_task_has_its_own_default_metric_and_direction() -> None:
    assert rule_for(PromoteSettings(), "classification", EVALUATE) == Rule(
        "test_accuracy", True, 0.0
    )
    assert rule_for(PromoteSettings(), "regression", EVALUATE) == Rule("test_rmse", False, 0.0)
    assert rule_for(PromoteSettings(), "rating", EVALUATE) == Rule("test_rmse", False, 0.0)
    assert rule_for(PromoteSettings(metric="test_r2"), "regression", EVALUATE).higher_is_better
    chosen = PromoteSettings(metric="test_mae", higher_is_better=False, min_improvement=0.1)
    assert rule_for(chosen, "regression", EVALUATE) == Rule("test_mae", False, 0.1)


def test_precision_at_the_configured_k_promotes_the_more_precise_model() -> None:
    # The direction was read off the name: only `precision_at_10` was known to be a score, so
    # with top_k 5 a model recommending worse lists became champion.
    top_5 = EvaluateSettings(top_k=5)
    for metric in ("test_precision_at_5", "test_recall_at_5", "test_precision_at_5_ci_low"):
        rule = rule_for(PromoteSettings(metric=metric), "rating", top_5)
        assert decide(0.40, 0.30, 1, rule).promoted, metric
        assert not decide(0.20, 0.30, 1, rule).promoted, metric


def test_a_metric_without_a_declared_direction_asks_for_one() -> None:
    # precision@10 is not logged when top_k is 5: which way it is better is not guessed.
    unknown = PromoteSettings(metric="test_precision_at_10")
    with pytest.raises(SettingsError, match=r"promote\.higher_is_better"):
        rule_for(unknown, "rating", EvaluateSettings(top_k=5))
    told = PromoteSettings(metric="test_precision_at_10", higher_is_better=True)
    assert rule_for(told, "rating", EvaluateSettings(top_k=5)).higher_is_better
