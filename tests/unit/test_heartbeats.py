"""The heartbeat settings and the automation that crashes silent runs agree with Prefect's."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mlaas.orchestration.heartbeats import (
    HEARTBEAT_SECONDS,
    SILENT_RUN_SECONDS,
    heartbeat_environment,
    silent_run_detection,
)


def test_a_run_is_called_silent_only_after_missing_several_heartbeats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.flow_engine import MINIMUM_HEARTBEAT_INTERVAL
    from prefect.settings import Settings

    # Prefect raises a lower frequency to its minimum: the window must be counted from that.
    assert HEARTBEAT_SECONDS >= MINIMUM_HEARTBEAT_INTERVAL
    assert SILENT_RUN_SECONDS >= 3 * HEARTBEAT_SECONDS
    # The variable is the one Prefect's settings read.
    for variable, value in heartbeat_environment().items():
        monkeypatch.setenv(variable, value)
    assert Settings().flows.heartbeat_frequency == HEARTBEAT_SECONDS


def test_the_automation_waits_for_a_heartbeat_or_an_end_then_crashes_the_run() -> None:
    automation = silent_run_detection()
    trigger = automation.trigger
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.posture == "Proactive" and trigger.within == timedelta(
        seconds=SILENT_RUN_SECONDS
    )
    assert trigger.for_each == {"prefect.resource.id"}  # each run on its own
    assert automation.actions[0].state == "CRASHED"
