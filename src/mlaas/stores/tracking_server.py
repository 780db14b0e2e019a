"""One look at an MLflow tracking server before work starts: is it there, does it take these
credentials, can it reach its own database?

MLflow's client retries a failed request for minutes (seven times, with back-off) and then
reports the last transport error. That is right in the middle of a run, where a server restart
should be ridden out, and wrong before one: a server that is down, a wrong password or a
stopped database must stop the run at once with a message that names the server and says what
to do. So this asks once, without retries and with a short timeout, through MLflow's own
request function (its credentials: `MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`,
`MLFLOW_TRACKING_TOKEN`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from mlaas.core.errors import TrackingStoreUnavailable
from mlaas.stores.workspace import redacted

_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
# For the requests of a run: MLflow's client retries a failed one seven times over about four
# minutes. A run should ride out a tracking server's restart (`mlaas up --team` brings a dead
# one back within seconds), not hang for minutes when its database is gone: four retries, about
# half a minute. Defaults only: a value the user set wins.
MLFLOW_REQUEST_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4"}
PROBE_ENDPOINT = "/api/2.0/mlflow/registered-models/search"
PROBE_TIMEOUT_SECONDS = 10.0
CREDENTIALS_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server "
    "(the README's team section; on the stack's machine `mlaas` sets them itself)"
)
SERVER_DOWN_HINT = (
    "start it (`mlaas up --team` on the stack's machine; `mlaas status` there shows which part "
    "is down), or point MLAAS_TRACKING_URI at the server that runs"
)

# MLflow's server runs its jobs (trace scoring, prompt optimisation) in a job runner and Huey
# consumers of their own; mlaas asks for none, and at start those processes cost twice the CPU
# of the server itself (137 s against 65 s over a whole `make test`, sampled from /proc).
WITHOUT_SERVER_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def is_tracking_server(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def probe_tracking_server(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """Raise TrackingStoreUnavailable, naming the server and what to do, unless it answers an
    authenticated request successfully."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds

    credentials = get_default_host_creds(uri)
    try:
        response = request_once(uri, PROBE_ENDPOINT, {"max_results": 1}, timeout)
    except MlflowException as error:  # MLflow wraps the transport error (refused, timed out)
        raise TrackingStoreUnavailable(
            f"the MLflow tracking server at {redacted(uri)} does not answer "
            f"({_transport_cause(error.message)}): {SERVER_DOWN_HINT}. Nothing was run."
        ) from None
    refusal = refusal_of(redacted(uri), response.status_code, _body(response), credentials)
    if refusal is not None:
        raise TrackingStoreUnavailable(refusal)


def request_once(uri: str, endpoint: str, params: dict[str, Any], timeout: float) -> Any:
    """One GET of MLflow's REST API, with MLflow's credentials (read now: a rotated password is
    picked up), no retries, any status returned; MlflowException when nothing answers."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    return http_request(
        get_default_host_creds(uri),
        endpoint,
        "GET",
        max_retries=0,
        backoff_factor=0,
        timeout=timeout,
        raise_on_status=False,
        params=params,
    )


def refusal_of(shown_uri: str, status: int, body: str, credentials: Any) -> str | None:
    """What an answer other than 200 means, and what to do about it; None for a 200."""
    server = f"the MLflow tracking server at {shown_uri}"
    if status == 200:
        return None
    if status == 401:
        if credentials.username is None and credentials.token is None:
            return f"{server} asks for credentials and none were given: {CREDENTIALS_HINT}."
        return (
            f"{server} refused the credentials of user {credentials.username!r} (401): "
            f"{CREDENTIALS_HINT}. Nothing was run."
        )
    if status == 403:
        return (
            f"{server} does not let user {credentials.username!r} read the model registry "
            "(403): ask its administrator for EDIT permission on the experiments and models "
            "mlaas writes. Nothing was run."
        )
    if status == 404:
        return (
            f"{server} has no tracking API at {PROBE_ENDPOINT} (404): MLAAS_TRACKING_URI must "
            "be the server's root URL (http://host:port), not a page of its UI. Nothing was run."
        )
    if status >= 500:
        return (
            f"{server} answers {status} ({body}): it runs, but cannot use its own store. In "
            "team mode that is PostgreSQL: `mlaas status` on the stack's machine shows whether "
            "it is up, and `mlaas up --team` starts it again. Nothing was run."
        )
    return f"{server} answers {status} ({body}) to a registry search. Nothing was run."


def _body(response: Any) -> str:
    """An answer's text on one line, short: enough to recognise, never a page, and with any
    password in a URL it quotes (a database's, in a server error) masked."""
    text = " ".join(str(response.text or "").split())
    return _URL_PASSWORD.sub(r"\1***@", text)[:300] or "no text"


def _transport_cause(message: str) -> str:
    # requests' messages nest the reason deep in a repr; the part a user recognises is last.
    for reason in ("Connection refused", "timed out", "Name or service not known"):
        if reason in message:
            return reason.lower()
    return message.splitlines()[0][:300]
