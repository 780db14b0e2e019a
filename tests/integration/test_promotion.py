"""A model worse than the champion never becomes champion; it is kept as the challenger."""

from __future__ import annotations

import json

import pytest
from tests.conftest import shrink

from mlaas.core.settings import Settings
from mlaas.stages.table import run_stage
from mlaas.stores.registry import CHALLENGER, CHAMPION, Registry
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow
UP_TO_PROMOTION = ("load", "validate", "split", "train", "evaluate", "register", "promote")


def test_a_worse_model_is_registered_but_not_promoted(
    project_settings: Settings, workspace: Workspace
) -> None:
    good = shrink(project_settings, "promotion")
    # One epoch at a tiny learning rate: a real model, and a clearly worse one.
    worse = shrink(project_settings, "promotion", train={"max_epochs": 1, "learning_rate": 1e-5})
    for settings in (good, worse):
        for stage in UP_TO_PROMOTION:
            run_stage(stage, settings, workspace)

    registry = Registry(workspace)
    assert registry.aliases("promotion") == {CHAMPION: 1, CHALLENGER: 2}
    decision = json.loads(registry.version_tags("promotion", 2)["mlaas.decision"])
    assert decision["promoted"] is False
    assert decision["champion_version"] == 1
    assert decision["candidate_value"] < decision["champion_value"]
    assert "does not beat" in decision["reason"]

    # Deciding again reports the recorded decision; it never flips the champion.
    promotion = run_stage("promote", worse, workspace)
    assert promotion.champion.version == 1 and promotion.decided_now is False
