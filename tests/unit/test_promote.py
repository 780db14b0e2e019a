from mlaas.promote import Rule, decide, rule_for
from mlaas.registry import CHALLENGER, CHAMPION
from mlaas.settings import PromoteSettings

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
    assert rule_for(PromoteSettings(), "classification") == Rule("test_accuracy", True, 0.0)
    assert rule_for(PromoteSettings(), "regression") == Rule("test_rmse", False, 0.0)
    assert rule_for(PromoteSettings(), "rating") == Rule("test_rmse", False, 0.0)
    assert rule_for(PromoteSettings(metric="test_r2"), "regression").higher_is_better
    chosen = PromoteSettings(metric="test_mae", higher_is_better=False, min_improvement=0.1)
    assert rule_for(chosen, "regression") == Rule("test_mae", False, 0.1)
