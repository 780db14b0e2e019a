from mlaas.promote import decide
from mlaas.registry import CHALLENGER, CHAMPION
from mlaas.settings import PromoteSettings


def test_the_first_version_becomes_champion() -> None:
    decision = decide(0.5, None, None, PromoteSettings())
    assert decision.promoted and decision.alias == CHAMPION


def test_a_better_version_becomes_champion() -> None:
    decision = decide(0.95, 0.90, 1, PromoteSettings())
    assert decision.promoted and decision.alias == CHAMPION
    assert "beats" in decision.reason and "v1" in decision.reason


def test_an_equal_or_worse_version_is_only_a_challenger() -> None:
    for candidate in (0.90, 0.80):
        decision = decide(candidate, 0.90, 1, PromoteSettings())
        assert not decision.promoted and decision.alias == CHALLENGER


def test_the_margin_must_be_exceeded() -> None:
    cfg = PromoteSettings(min_improvement=0.01)
    assert not decide(0.905, 0.90, 1, cfg).promoted
    assert decide(0.92, 0.90, 1, cfg).promoted


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    cfg = PromoteSettings(metric="test_rmse", higher_is_better=False)
    assert decide(0.8, 0.9, 1, cfg).promoted
    assert not decide(1.0, 0.9, 1, cfg).promoted
