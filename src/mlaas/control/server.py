"""The control API's process, as `mlaas up` starts it:

    python -m mlaas.control.server --home HOME --port 8000 --prefect-url URL --mlflow-url URL

Besides answering requests, it starts the model server of each pipeline that gets its first
champion (it looks every `--servers-every` seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import uvicorn

# Imported before uvicorn starts: Prefect sets up logging when first imported, and would
# otherwise replace uvicorn's handlers (the access log) the first time a pipeline is created.
import mlaas.orchestration.deployments  # noqa: F401
from mlaas.control.api import create_app
from mlaas.control.model_servers import ensure_model_servers
from mlaas.control.operations import Platform
from mlaas.control.prefect_api import PrefectApi
from mlaas.stores.workspace import Workspace

DEFAULT_MAX_UPLOAD_BYTES = 100 * 2**20
API_MLFLOW_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def keep_model_servers(workspace: Workspace, every: float, stop: threading.Event) -> None:
    said: set[str] = set()

    def say_once(message: str) -> None:
        # A server that cannot start (its port held by another program) is retried every
        # few seconds; its reason is worth one line, not one per try.
        if message not in said:
            said.add(message)
            print(f"mlaas model servers: {message}", file=sys.stderr, flush=True)

    while not stop.wait(every):
        ensure_model_servers(workspace, say_once)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlaas.control.server")
    parser.add_argument("--home", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--prefect-url", required=True, help="the Prefect API, http://H:P/api")
    parser.add_argument("--mlflow-url", required=True, help="the MLflow UI, http://H:P")
    parser.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES)
    parser.add_argument("--project-root", default=".", help="where bentofile.yaml and src/ are")
    parser.add_argument("--reserved-port", type=int, action="append", default=[])
    parser.add_argument("--servers-every", type=float, default=3.0)
    parser.add_argument("--work-pool", help="team mode: the pool whose workers run the runs")
    args = parser.parse_args(argv)
    # A request waits on MLflow here: MLflow's client default (seven retries, backed off, a
    # couple of minutes) would hang it while the tracking server is away, where one quick retry
    # and a 503 naming the server is the useful answer (MLflow reads them at each request).
    # Its own values, whatever `mlaas up` inherited (team mode's runs ride out longer).
    os.environ.update(API_MLFLOW_REQUESTS)
    workspace = Workspace.from_env(args.home)
    platform = Platform(
        workspace=workspace,
        prefect=PrefectApi(args.prefect_url, os.environ.get("PREFECT_API_AUTH_STRING")),
        mlflow_url=args.mlflow_url,
        max_upload_bytes=args.max_upload_bytes,
        project_root=Path(args.project_root).resolve(),
        reserved_ports=frozenset([args.port, *args.reserved_port]),
        work_pool=args.work_pool,
    )
    stop = threading.Event()
    watcher = threading.Thread(
        target=keep_model_servers, args=(workspace, args.servers_every, stop), daemon=True
    )
    watcher.start()
    try:
        uvicorn.run(create_app(platform), host=args.host, port=args.port, log_level="info")
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
