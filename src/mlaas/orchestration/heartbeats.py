"""Runs whose process vanished: heartbeats from each run, and the server-side automation that
marks a run Crashed once they stop.

Free of Prefect imports at module level: `mlaas up` reads `heartbeat_environment` for the parts it
starts without loading Prefect.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# A run's process sends a heartbeat this often (Prefect's minimum): the runner and the workers
# set PREFECT_FLOWS_HEARTBEAT_FREQUENCY for the runs they start (`heartbeat_environment`).
HEARTBEAT_SECONDS = 30
# A run that sent a heartbeat and then neither another one nor an end within this long is
# marked Crashed (three beats missed): its machine died, or it was cut off from the server
# (PostgreSQL stopped under it) and could not say how it ended. Otherwise it would stay
# "Running" for ever, and hold its deployment's one-run-at-a-time slot.
SILENT_RUN_SECONDS = 90
CRASH_SILENT_RUNS = "mlaas: silent runs are crashed"


def heartbeat_environment() -> dict[str, str]:
    """What the process that starts the flow runs (the runner, a worker) needs in its
    environment for each run to send heartbeats."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}


def silent_run_detection() -> Any:
    """Prefect's own answer to a run whose process vanished: an automation, on the server, that
    marks it Crashed once its heartbeats stop (the recipe of Prefect's "detect zombie flows")."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    ends = ("Completed", "Failed", "Cancelled", "Crashed")
    return AutomationCore(
        name=CRASH_SILENT_RUNS,
        description=f"a run that sent no heartbeat for {SILENT_RUN_SECONDS} s is Crashed",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{end}" for end in ends)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=SILENT_RUN_SECONDS),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {SILENT_RUN_SECONDS} s: the run's process or machine "
                    "stopped, or lost the Prefect server, before it could report how it ended"
                ),
            )
        ],
    )


async def ensure_silent_run_detection() -> None:
    """The automation of `silent_run_detection` on the server, made once (by name)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        if not await client.read_automations_by_name(CRASH_SILENT_RUNS):
            await client.create_automation(silent_run_detection())
