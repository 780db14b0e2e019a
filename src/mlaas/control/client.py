"""The control API from another machine: what `mlaas train | pipelines | runs` do there.

On the stack's machine those commands call the control functions themselves (on the records
`mlaas up` keeps); a machine that joined a team stack has none of them, only URLs and
credentials, so it asks the stack's control API over HTTP: `MLAAS_API_URL` (the API's base
URL) and `MLAAS_API_KEY` (its key). Both answer with the API's own JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from mlaas.control import operations
from mlaas.control.operations import Platform
from mlaas.core.errors import MlaasError, StoreUnavailable

API_URL_VARIABLE = "MLAAS_API_URL"
TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class ControlClient:
    url: str
    """The control API's base URL, `http://HOST:PORT`."""
    key: str | None = field(default=None, repr=False)

    def pipelines(self, name: str | None = None) -> list[Any]:
        if name is not None:
            return [self._call("GET", f"/pipelines/{name}")]
        found: list[Any] = self._call("GET", "/pipelines")
        return found

    def run(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/runs/{run_id}")
        return found

    def start_run(self, name: str, overrides: dict[str, Any], reason: str | None) -> dict[str, Any]:
        body = {"overrides": overrides, "reason": reason}
        started: dict[str, Any] = self._call("POST", f"/pipelines/{name}/runs", body)
        return started

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            answer = httpx.request(
                method, f"{self.url}{path}", json=json, headers=headers, timeout=TIMEOUT_SECONDS
            )
        except httpx.TransportError as error:
            raise StoreUnavailable(
                f"the control API at {self.url} does not answer ({type(error).__name__}): check "
                f"{API_URL_VARIABLE}, and that the stack is up (`mlaas status` on its machine)"
            ) from None
        if answer.status_code == 401:
            raise MlaasError(
                f"the control API at {self.url} refused the key (401): set MLAAS_API_KEY to the "
                "stack's key"
            )
        if answer.status_code >= 400:
            raise MlaasError(f"the control API answered {answer.status_code}: {_error(answer)}")
        return answer.json()


def _error(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["error"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:300]


@dataclass(frozen=True)
class LocalControl:
    """The same three calls on the stack's own machine: the control functions themselves."""

    platform: Platform

    def pipelines(self, name: str | None = None) -> list[Any]:
        views = (
            [operations.describe_pipeline(self.platform, name)]
            if name
            else operations.list_pipelines(self.platform)
        )
        return [view.model_dump(mode="json") for view in views]

    def run(self, run_id: str) -> dict[str, Any]:
        return operations.describe_run(self.platform, run_id).model_dump(mode="json")

    def start_run(self, name: str, overrides: dict[str, Any], reason: str | None) -> dict[str, Any]:
        started = operations.start_run(self.platform, name, overrides, reason)
        return started.model_dump(mode="json")
