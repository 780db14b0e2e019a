"""The few calls the control plane makes to the Prefect server, over its REST API.

Plain HTTP rather than Prefect's client: the control API answers from a thread of its own and
needs a few calls, each bounded in time, each failure said in one line.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from mlaas.core.errors import NotFound, PrefectUnavailable
from mlaas.core.records import run_outcome_key

FLOW_NAME = "training_pipeline"
# Prefect's state types of a run that has ended.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
TIMEOUT_SECONDS = 10.0
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0)


def basic_auth(auth: str | None) -> dict[str, str]:
    """The header a Prefect server with PREFECT_SERVER_API_AUTH_STRING asks for (`user:pass`,
    as PREFECT_API_AUTH_STRING holds it); none without one."""
    if not auth:
        return {}
    return {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"}


@dataclass(frozen=True)
class PrefectApi:
    url: str
    """The server's API, `http://HOST:PORT/api`."""
    auth: str | None = field(default=None, repr=False)
    """`user:password` for a server that asks for it (PREFECT_API_AUTH_STRING)."""

    @property
    def ui(self) -> str:
        return self.url.removesuffix("/api")

    def call(self, method: str, path: str, json: Any = None) -> Any:
        """Any endpoint of the server's API (`path` below `/api`), its JSON answer; what a busy
        server asks for retried. Also what the tests reach the server with: a raw request would
        take a passing 503 for a failure."""
        try:
            answer = self._send(method, path, json)
            # A busy server (its SQLite database locked by the runner and the scheduler) says
            # 503 or 429 for a moment: try again, as Prefect's own client does. Every call
            # here is safe to repeat (a new run carries an idempotency key).
            for delay in RETRY_DELAYS_SECONDS:
                if answer.status_code not in (429, 503):
                    break
                time.sleep(delay)
                answer = self._send(method, path, json)
        except httpx.TransportError as error:
            raise PrefectUnavailable(
                f"the Prefect server at {self.ui} does not answer ({type(error).__name__}): "
                "start the platform with `mlaas up`"
            ) from None
        if answer.status_code == 401:
            raise PrefectUnavailable(
                f"the Prefect server at {self.ui} refused the control API's credentials (401): "
                "PREFECT_API_AUTH_STRING must be the server's PREFECT_SERVER_API_AUTH_STRING"
            )
        if answer.status_code == 404:
            raise NotFound(path)
        if answer.status_code >= 400:
            raise PrefectUnavailable(
                f"the Prefect server answered {answer.status_code} to {method} {path}: "
                f"{answer.text[:300]}"
            )
        return answer.json() if answer.content else None

    def _send(self, method: str, path: str, json: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            json=json,
            headers=basic_auth(self.auth),
            timeout=TIMEOUT_SECONDS,
        )

    def problem(self) -> str | None:
        """Why the server cannot take work now (down, or its database away); None if it can.
        One request, not retried: a readiness check says how things are, at once."""
        try:
            answer = self._send("GET", "/ready", None)
        except httpx.TransportError as error:
            return f"the Prefect server at {self.ui} does not answer ({type(error).__name__})"
        if answer.status_code != 200:
            return (
                f"the Prefect server at {self.ui} is not ready ({answer.status_code}: "
                f"{answer.text[:200]}); in team mode its database is PostgreSQL"
            )
        return None

    def deployment(self, pipeline: str, flow: str = FLOW_NAME) -> dict[str, Any]:
        """The pipeline's deployment of `flow` (its `training_pipeline`, or its `monitor`)."""
        try:
            found: dict[str, Any] = self.call("GET", f"/deployments/name/{flow}/{pipeline}")
        except NotFound:
            raise NotFound(
                f"pipeline {pipeline!r} has no Prefect deployment yet (the runner deploys a new "
                "pipeline within a few seconds): try again shortly"
            ) from None
        return found

    def deployment_name(self, deployment_id: str) -> str:
        try:
            found = self.call("GET", f"/deployments/{deployment_id}")
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
        return self.call("POST", f"/deployments/{deployment_id}/create_flow_run", body)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.call("GET", f"/flow_runs/{run_id}")
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
        found: list[Any] = self.call("POST", "/flow_runs/filter", body)
        return found

    def run_outcome(self, run_id: str, pipeline: str) -> Any | None:
        """The data of the outcome artifact the run left (`record_outcome`); None before it
        ended, or when it ended without one (it crashed)."""
        body = {
            "artifacts": {
                "flow_run_id": {"any_": [run_id]},
                "key": {"any_": [run_outcome_key(pipeline)]},
            },
            "sort": "CREATED_DESC",
            "limit": 1,
        }
        found: list[dict[str, Any]] = self.call("POST", "/artifacts/filter", body)
        if not found:
            return None
        data = found[0]["data"]
        # Prefect's client sends an artifact's data as a JSON string.
        return json.loads(data) if isinstance(data, str) else data

    def next_scheduled(self, deployment_id: str) -> dict[str, Any] | None:
        body = {
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 1,
        }
        found: list[dict[str, Any]] = self.call("POST", "/flow_runs/filter", body)
        return found[0] if found else None
