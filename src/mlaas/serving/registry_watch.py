"""Registry watch: a model server says whether its MLflow registry is reachable.

The server never needs the registry to answer (it serves the packaged model it has, and follows
the package record, `mlaas.serving.hot_swap`), so a registry that is away must not stop it, nor
make it unready. It must be visible, though: a watcher thread asks the registry every
`serve.registry_poll_seconds` which version its champion alias names, once, without retries
and with a short timeout, and keeps the answer as a `RegistryStatus` (shown by `GET /model`
and as gauges in /metrics). A change of reachability is logged once, not on every poll.

Free of BentoML imports; MLflow is imported only when the real probe is built (the server
imports it nowhere else, and a Bento may be run where it is not installed).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from mlaas.serving.polling import start_polling
from mlaas.stores.model_registry import CHAMPION, NOT_FOUND_CODES
from mlaas.stores.tracking_server import request_once
from mlaas.stores.workspace import SQLITE_PREFIX, is_sqlite

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Gauge

LOG = logging.getLogger(__name__)

ALIAS_ENDPOINT = "/api/2.0/mlflow/registered-models/alias"
PROBE_TIMEOUT_SECONDS = 5.0
_URL_USER = re.compile(r"(?<=://)[^/\s]*@")
_MAX_ERROR_CHARS = 300

Probe = Callable[[], int | None]
"""One look at the registry: the version the alias names (None: no such model or alias);
raises when the registry does not answer."""


class RegistryStatus(BaseModel):
    """What the server last learned of its model registry."""

    model_config = ConfigDict(frozen=True)

    reachable: bool | None = Field(
        None,
        json_schema_extra={"nullable": True},
        description="whether the registry answered the last look; null before the first one "
        "(or with serve.registry_poll_seconds 0)",
    )
    tracking_uri: str = Field(description="the registry's store, without any credentials")
    last_success: float | None = Field(
        None, json_schema_extra={"nullable": True}, description="when it last answered (unix time)"
    )
    since: float | None = Field(
        None,
        json_schema_extra={"nullable": True},
        description="while unreachable: when this server's first failed look of the current "
        "spell was (unix time)",
    )
    error: str | None = Field(
        None,
        json_schema_extra={"nullable": True},
        description="while unreachable: why, on one line",
    )
    champion_version: int | None = Field(
        None,
        json_schema_extra={"nullable": True},
        description="the version the registry's alias named when it last answered (null: none)",
    )


def without_credentials(uri: str) -> str:
    """`uri` without its `user:password@` part, for status and logs."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def one_line_error(error: BaseException) -> str:
    """An error as one short line, with any credentials of a URL it quotes removed."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    # requests nests the reason a user recognises deep in a repr: that is what is kept.
    for reason in ("Connection refused", "timed out", "Name or service not known"):
        if reason in text:
            return f"{type(error).__name__}: {reason.lower()}"
    return _URL_USER.sub("", text)[:_MAX_ERROR_CHARS]


def next_status(
    previous: RegistryStatus, now: float, outcome: int | Exception | None
) -> RegistryStatus:
    """The status after one look whose outcome is the champion's version (or None), or the
    error that stopped it."""
    if not isinstance(outcome, Exception):
        return RegistryStatus(
            reachable=True,
            tracking_uri=previous.tracking_uri,
            last_success=now,
            champion_version=outcome,
        )
    return previous.model_copy(
        update={
            "reachable": False,
            "since": previous.since if previous.reachable is False else now,
            "error": one_line_error(outcome),
        }
    )


class RegistryWatcher:
    """Asks the registry for the alias of `model_name` every so often; `status` is the answer."""

    def __init__(
        self,
        workspace_tracking_uri: str,
        model_name: str,
        alias: str = CHAMPION,
        probe: Probe | None = None,
        on_status: Callable[[RegistryStatus], None] | None = None,
        log: logging.Logger = LOG,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tracking_uri = workspace_tracking_uri
        self.model_name = model_name
        self.alias = alias
        self.probe = probe
        """None: MLflow's own client, built by `start` (`mlflow_probe`)."""
        self.on_status = on_status
        """Called with each new status, in the watcher's thread (the service's gauges)."""
        self.log = log
        self.clock = clock
        self.status = RegistryStatus(tracking_uri=without_credentials(workspace_tracking_uri))
        self._stop = threading.Event()

    def poll(self) -> RegistryStatus:
        """One look at the registry; the new status is kept, published and returned."""
        if self.probe is None:
            self.probe = mlflow_probe(self.tracking_uri, self.model_name, self.alias)
        outcome: int | Exception | None
        try:
            outcome = self.probe()
        except Exception as error:  # whatever breaks, the server keeps serving what it has
            outcome = error
        previous, self.status = self.status, next_status(self.status, self.clock(), outcome)
        self._log_change(previous, self.status)
        if self.on_status is not None:
            self.on_status(self.status)
        return self.status

    def _log_change(self, previous: RegistryStatus, now: RegistryStatus) -> None:
        shown = now.tracking_uri
        if now.reachable is False and previous.reachable is not False:
            self.log.warning(
                "registry: the MLflow registry at %s does not answer (%s); this server keeps "
                "serving the model it has",
                shown,
                now.error,
            )
        elif now.reachable and previous.reachable is False:
            away = (now.last_success or 0.0) - (previous.since or 0.0)
            self.log.info(
                "registry: the MLflow registry at %s answers again (away for about %.0f s)",
                shown,
                away,
            )

    def start(self, interval: float) -> None:
        """Look now and then every `interval` seconds, in a daemon thread (0: never)."""
        if interval <= 0:
            return
        if self.probe is None:
            # Built here, before the server says it is ready: MLflow's import (seconds, tens of
            # MiB) is over before the first request, and no request waits on its import lock.
            try:
                self.probe = mlflow_probe(self.tracking_uri, self.model_name, self.alias)
            except ImportError as error:
                self.status = self.status.model_copy(
                    update={"error": f"not watched: MLflow is not installed here ({error})"}
                )
                self.log.warning("registry: %s", self.status.error)
                return
        start_polling(self.poll, interval, self._stop, self.log, "registry-watcher", at_once=True)

    def stop(self) -> None:
        self._stop.set()


def mlflow_probe(
    tracking_uri: str, model_name: str, alias: str, timeout: float = PROBE_TIMEOUT_SECONDS
) -> Probe:
    """MLflow's own call for the alias: one REST request without retries for a tracking server
    (its credentials from MLFLOW_TRACKING_USERNAME and _PASSWORD, or _TOKEN), the client's
    `get_model_version_by_alias` for a store it opens itself (SQLite, PostgreSQL)."""
    if urlsplit(tracking_uri).scheme in ("http", "https"):
        return _server_probe(tracking_uri, model_name, alias, timeout)
    return _store_probe(tracking_uri, model_name, alias)


def _server_probe(uri: str, model_name: str, alias: str, timeout: float) -> Probe:
    def probe() -> int | None:
        params = {"name": model_name, "alias": alias}
        response = request_once(uri, ALIAS_ENDPOINT, params, timeout)
        body = _json_or_empty(response)
        if response.status_code == 200:
            return int(body["model_version"]["version"])
        if body.get("error_code") in NOT_FOUND_CODES:
            return None
        text = " ".join(str(response.text or "").split())[:200] or "no text"
        raise RegistryRefused(f"the tracking server answers {response.status_code}: {text}")

    return probe


def _store_probe(uri: str, model_name: str, alias: str) -> Probe:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    database = _sqlite_file(uri)
    client: MlflowClient | None = None

    def probe() -> int | None:
        nonlocal client
        # MLflow would create a missing (or empty) SQLite store; creating one is the pipeline's
        # job, under its lock, never a model server's.
        if database is not None and (not database.exists() or database.stat().st_size == 0):
            raise FileNotFoundError(f"no MLflow database at {database}")
        if client is None:  # made once: each new client checks the store's tables again
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        try:
            return int(client.get_model_version_by_alias(model_name, alias).version)
        except MlflowException as error:
            if error.error_code in NOT_FOUND_CODES:
                return None
            raise

    return probe


class RegistryRefused(RuntimeError):
    """The tracking server answered, but not with the alias (a refusal or its own failure)."""


def _sqlite_file(uri: str) -> Path | None:
    if not is_sqlite(uri):
        return None
    return Path(unquote(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0]))


def _json_or_empty(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class RegistryGauges:
    """/metrics: whether the registry answered the last look, when it last did, and the
    version its alias named then; labelled with the model's name."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.model_name = model_name
        self.reachable = _gauge(
            "mlaas_registry_reachable",
            "1 when the model registry answered the server's last look, 0 when it did not",
            registry,
        )
        self.last_success = _gauge(
            "mlaas_registry_last_success_timestamp_seconds",
            "When the model registry last answered the server (unix time)",
            registry,
        )
        self.champion_version = _gauge(
            "mlaas_registry_champion_version",
            "The version the registry's alias named at its last answer (0: none)",
            registry,
        )

    def show(self, status: RegistryStatus) -> None:
        if status.reachable is None:
            return
        self.reachable.labels(model=self.model_name).set(1 if status.reachable else 0)
        if status.last_success is not None:
            self.last_success.labels(model=self.model_name).set(status.last_success)
            self.champion_version.labels(model=self.model_name).set(status.champion_version or 0)


def _gauge(name: str, documentation: str, registry: CollectorRegistry | None) -> Gauge:
    # Imported here: BentoML sets the multiprocess metrics folder before workers start
    # services, after this module is imported (as for the service's counters).
    from prometheus_client import REGISTRY, Gauge

    return Gauge(
        name,
        documentation,
        ["model"],
        registry=REGISTRY if registry is None else registry,
        # Each worker watches on its own, and the latest look is the truth.
        multiprocess_mode="mostrecent",
    )
