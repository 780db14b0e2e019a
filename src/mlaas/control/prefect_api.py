"""The few calls the control plane makes to the Prefect server, over its REST API.

Plain HTTP rather than Prefect's client: the control API answers from a thread of its own and
needs five calls, each bounded in time, each failure said in one line.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from mlaas.core.errors import NotFound, PrefectUnavailable

FLOW_NAME = "training_pipeline"
TIMEOUT_SECONDS = 10.0
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class PrefectApi:
    url: str
    """The server's API, `http://HOST:PORT/api`."""

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            answer = httpx.request(method, f"{self.url}{path}", json=json, timeout=TIMEOUT_SECONDS)
            # A busy server (its SQLite database locked by the runner and the scheduler) says
            # 503 or 429 for a moment: try again, as Prefect's own client does. Every call
            # here is safe to repeat (a new run carries an idempotency key).
            for delay in RETRY_DELAYS_SECONDS:
                if answer.status_code not in (429, 503):
                    break
                time.sleep(delay)
                answer = httpx.request(
                    method, f"{self.url}{path}", json=json, timeout=TIMEOUT_SECONDS
                )
        except httpx.TransportError as error:
            raise PrefectUnavailable(
                f"the Prefect server at {self.ui} does not answer ({type(error).__name__}): "
                "start the platform with `mlaas up`"
            ) from None
        if answer.status_code == 404:
            raise NotFound(path)
        if answer.status_code >= 400:
            raise PrefectUnavailable(
                f"the Prefect server answered {answer.status_code} to {method} {path}: "
                f"{answer.text[:300]}"
            )
        return answer.json()

    def deployment(self, pipeline: str, flow: str = FLOW_NAME) -> dict[str, Any]:
        """The pipeline's deployment of `flow` (its `training_pipeline`, or its `monitor`)."""
        try:
            found: dict[str, Any] = self._call("GET", f"/deployments/name/{flow}/{pipeline}")
        except NotFound:
            raise NotFound(
                f"pipeline {pipeline!r} has no Prefect deployment yet (the runner deploys a new "
                "pipeline within a few seconds): try again shortly"
            ) from None
        return found

    def deployment_name(self, deployment_id: str) -> str:
        try:
            found = self._call("GET", f"/deployments/{deployment_id}")
        except NotFound:
            raise NotFound(f"deployment {deployment_id} is gone from the Prefect server") from None
        return str(found["name"])

    def start_run(self, deployment_id: str, parameters: dict[str, Any], tags: list[str]) -> Any:
        """A run of the deployment, scheduled for now: its runner picks it up (one at a time)."""
        body = {
            "parameters": parameters,
            "tags": tags,
            "state": {"type": "SCHEDULED"},
            # The same key on a retried request makes no second run.
            "idempotency_key": str(uuid.uuid4()),
        }
        return self._call("POST", f"/deployments/{deployment_id}/create_flow_run", body)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self._call("GET", f"/flow_runs/{run_id}")
        except NotFound:
            raise NotFound(f"run_id: no run {run_id} on this platform's Prefect server") from None
        return found

    def runs(self, deployment_id: str, limit: int, states: list[str] | None = None) -> list[Any]:
        """The deployment's runs, newest first (by when they are or were due)."""
        flow_runs: dict[str, Any] = {}
        if states:
            flow_runs["state"] = {"type": {"any_": states}}
        body = {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": flow_runs,
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": limit,
        }
        found: list[Any] = self._call("POST", "/flow_runs/filter", body)
        return found

    def next_scheduled(self, deployment_id: str) -> dict[str, Any] | None:
        body = {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 1,
        }
        found: list[dict[str, Any]] = self._call("POST", "/flow_runs/filter", body)
        return found[0] if found else None
