"""The Prefect flow `monitor`: one check of a pipeline's served champion (`mlaas.stages.monitor`),
shown where people look, and a retraining through the pipeline's deployment when it is due.

`mlaas up` deploys it beside each pipeline's `training_pipeline`, every
`monitor.interval_seconds`. A retraining is a run of that deployment, so it queues behind a run
in progress, shows in the Prefect UI with its reason, and promotes only a better model; the
model servers follow the new champion by themselves.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mlaas.core.errors import NotReady
from mlaas.core.records import artifact_key
from mlaas.core.settings import load_settings
from mlaas.orchestration.flow import DEFAULT_PARAMS, training_pipeline
from mlaas.stages import monitor as monitor_stage
from mlaas.stages.monitor_report import drift_table, summary_markdown
from mlaas.stores.workspace import Workspace, apply_missing_environment


def retraining_starter(pipeline: str) -> monitor_stage.StartRetraining:
    """Starts a run of the pipeline's `training_pipeline` deployment and returns its id."""

    def start(overrides: dict[str, Any], reason: str) -> str:
        from prefect.deployments import run_deployment
        from prefect.runtime import flow_run

        run = run_deployment(
            f"{training_pipeline.name}/{pipeline}",
            parameters={"overrides": overrides, "reason": reason},
            timeout=0,  # queued, not awaited: the check is done; the retraining is its own run
            as_subflow=False,
            # Team mode: on the stack's machine's queue, as this check is, for the feedback
            # rows it hands over are files there. (None: the deployment's own.)
            work_queue_name=_own_work_queue(flow_run.id),
        )
        return str(run.id)  # type: ignore[union-attr]  # called from a sync flow: not awaited

    return start


def _own_work_queue(run_id: str | None) -> str | None:
    """The work queue of a run of a work pool's deployment (team mode); None for a runner's."""
    if run_id is None:
        return None
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(run_id))
    return run.work_queue_name if run.work_pool_name else None


def run_state(run_id: str) -> tuple[str, str | None]:
    """A flow run's state type and message, from the Prefect API this flow runs against."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(run_id)).state
    if state is None:
        return "UNKNOWN", None
    return str(state.type.value), state.message


@flow(name="monitor")
def monitor(
    params: str | dict[str, Any] = DEFAULT_PARAMS, home: str | None = None
) -> dict[str, Any]:
    """Check the champion of the pipeline in `params` against what it learned; retrain on drift."""
    logger = get_run_logger()
    settings = load_settings(params)
    workspace = Workspace.from_env(home)
    apply_missing_environment(workspace)
    name = settings.pipeline.name
    alert = monitor_stage.failed_retraining(monitor_stage.history(workspace, name), run_state)
    if alert is not None:  # said once per check until a later retraining replaces it
        logger.error("%s: %s", name, alert)
        create_markdown_artifact(
            f"**{name}: retraining failed.** {alert}",
            key=artifact_key("monitor", name, "alert"),
            description="mlaas monitor alert",
        )
    try:
        check = monitor_stage.run(workspace, name, settings.monitor, retraining_starter(name))
    except NotReady as nothing_served:  # a pipeline whose first run has not finished yet
        logger.info("%s: nothing to check: %s", name, nothing_served)
        return {"pipeline": name, "checked": False, "reason": str(nothing_served)}
    link = f"file://{check.report}" if check.report else None
    create_markdown_artifact(
        summary_markdown(check, link),
        key=artifact_key("monitor", name),
        description="mlaas monitor",
    )
    create_table_artifact(drift_table(check), key=artifact_key("monitor", name, "features"))
    retraining = check.retraining
    if retraining.started == "failed":
        logger.error("%s: %s; the champion stays v%d", name, retraining.reason, check.model_version)
    elif retraining.wanted:
        logger.warning("%s v%d: %s", name, check.model_version, retraining.reason)
    else:
        logger.info("%s v%d: %s", name, check.model_version, retraining.reason)
    return check.model_dump(mode="json")
