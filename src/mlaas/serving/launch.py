"""Starting `bentoml serve` for `mlaas serve`: the address check before it, and its command.

Free of BentoML imports (like `mlaas.serving.apikey`): the check runs before BentoML is loaded,
and the command starts a fresh interpreter, so the server imports the Bento's copy of mlaas,
never the copy that `mlaas serve` runs from.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from mlaas.core.errors import MlaasError
from mlaas.core.settings import MAX_SERVING_WORKERS
from mlaas.stores.bento_store import BENTOML_WITH_METRICS_DIR

SERVER_OPTIONS_VARIABLE = "MLAAS_SERVER_OPTIONS"


class ServerOptions(BaseModel):
    """How `mlaas serve` asks one server to run, beyond what its Bento holds. Handed over in the
    environment (`MLAAS_SERVER_OPTIONS`, JSON), which BentoML's leader and workers inherit: its
    `--arg` values do not reach a Bento's service, since loading a Bento replaces them with the
    arguments it was built with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(1, ge=1, le=MAX_SERVING_WORKERS)
    batching: bool = True
    """Adaptive batching of /predict (`mlaas serve --no-batching` answers each request alone)."""
    prediction_log: bool = True
    """`mlaas serve --no-prediction-log` records nothing, whatever `monitor.log_predictions`."""

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> ServerOptions:
        return cls.model_validate_json(environment.get(SERVER_OPTIONS_VARIABLE) or "{}")

    def environment(self) -> dict[str, str]:
        return {SERVER_OPTIONS_VARIABLE: self.model_dump_json()}


def bentoml_serve_command(
    bento_tag: str, host: str, port: int, metrics_dir: Path, *arguments: str
) -> list[str]:
    """`bentoml serve` for one Bento on host:port, its Prometheus files in `metrics_dir`."""
    return [
        sys.executable,
        "-c",
        BENTOML_WITH_METRICS_DIR,
        str(metrics_dir),
        "serve",
        bento_tag,
        "--host",
        host,
        "--port",
        str(port),
        *arguments,
    ]


def ensure_port_free(host: str, port: int) -> None:
    """Bind host:port the way BentoML will (with SO_REUSEADDR), so a port in use stops
    `mlaas serve` with a message instead of BentoML's OSError traceback."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        raise MlaasError(
            f"serve.host {host!r} is not an IP address (BentoML listens on addresses only): "
            "use 127.0.0.1 for this machine alone, or 0.0.0.0 for every interface"
        ) from None
    with socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise MlaasError(address_problem(host, port, error)) from None


def address_problem(host: str, port: int, error: OSError) -> str:
    """Why the server cannot listen on host:port, and what to do instead."""
    pick = "pick another with `mlaas serve --port N` (`make serve PORT=N`) or serve.port"
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another server?): {pick}"
    if error.errno == errno.EACCES:
        return f"port {port} needs root privileges (ports below 1024 do): {pick}"
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"serve.host {host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 "
            "or one of its own addresses"
        )
    return f"cannot listen on {host}:{port} ({error.strerror}): {pick}"
