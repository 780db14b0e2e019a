"""A model server per pipeline that has a champion: `bentoml serve` of its packaged Bento, as a
recorded process (`serve-NAME` under `$MLAAS_HOME/run/`) on the pipeline's `serve.port`.

Started by `mlaas up` for the pipelines that have a champion then, and by the control API for
those that get their first one later; stopped by `mlaas down`. A running server follows its
pipeline's later champions by itself (it swaps each one in: `mlaas.serving.hot_swap`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import httpx

from mlaas.control.operations import model_server_part
from mlaas.core.errors import MlaasError
from mlaas.core.records import Packaged
from mlaas.core.settings import Settings, load_settings
from mlaas.serving.launch import ServerOptions, bentoml_serve_command, ensure_port_free
from mlaas.stages.context import StageContext
from mlaas.stores import supervisor
from mlaas.stores.catalog import Catalog, CatalogEntry
from mlaas.stores.registry import CHAMPION, Registry, naming_the_store
from mlaas.stores.workspace import Workspace

# Loading torch and the model in a fresh interpreter: seconds alone, a minute on a busy box.
READY_WITHIN_SECONDS = 180.0
_logger = logging.getLogger("mlaas.model_servers")


def _ready(url: str) -> Callable[[], bool]:
    def answers() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    return answers


def ensure_model_server(
    workspace: Workspace,
    entry: CatalogEntry,
    environment: Mapping[str, str],
    say: Callable[[str], None],
) -> None:
    """Start the pipeline's model server if it has a packaged champion and no server runs."""
    name = model_server_part(entry.name)
    record = supervisor.read_record(workspace, name)
    if record is not None and supervisor.is_running(record):
        return
    packaged_file = workspace.pipeline(entry.name).package_result
    settings = load_settings(entry.params)
    if not packaged_file.is_file() and not _packaged_from_the_registry(workspace, settings, say):
        return  # no champion yet: its first run packages one
    packaged = Packaged.model_validate_json(packaged_file.read_text())
    host, port = settings.serve.host, settings.serve.port
    if record is not None:
        say(f"{name}: pid {record.pid} is no longer running; starting it again")
        supervisor.stop(record)
        supervisor.forget(workspace, name)
    ensure_port_free(host, port)
    url = f"http://{host}:{port}"
    command = bentoml_serve_command(
        packaged.bento_tag, host, port, workspace.metrics_dir(host, port)
    )
    tracing = {} if settings.serve.tracing else {"OTEL_SDK_DISABLED": "true"}
    options = ServerOptions(workers=settings.serve.workers).environment()
    started = supervisor.start(
        workspace,
        name,
        command,
        url,
        _ready(url),
        {**environment, **workspace.environment(), **tracing, **options},
        READY_WITHIN_SECONDS,
    )
    supervisor.clear_problem(workspace, name)
    say(f"{name}: serving {packaged.bento_tag} at {started.url} (pid {started.pid})")


def _packaged_from_the_registry(
    workspace: Workspace, settings: Settings, say: Callable[[str], None]
) -> bool:
    """Team mode: a champion that another machine's worker made (and packaged there) is
    packaged here too, from the shared registry, so that this machine serves it. One machine's
    runs package their champions themselves: nothing to do."""
    if workspace.store_uri is None:
        return False
    name = settings.pipeline.name
    with naming_the_store(workspace, f"packaging pipeline {name}'s champion here"):
        champion = Registry(workspace).version_with_alias(name, CHAMPION)
        if champion is None:
            return False
        say(f"{model_server_part(name)}: packaging v{champion.version} here, from the registry")
        from mlaas.stages import package  # BentoML, imported once there is something to build

        package.run(StageContext(settings, workspace))
    return True


def ensure_model_servers(workspace: Workspace, say: Callable[[str], None] = _logger.info) -> None:
    """A server for every pipeline of the catalog with a champion; a problem with one pipeline
    (a port another program holds, a broken params file) is said, kept for the pipeline's view
    (`server.problem`) until its server starts, and the others go on."""
    environment = dict(os.environ)
    environment.pop("PREFECT_API_URL", None)
    for entry in Catalog(workspace).entries():
        try:
            ensure_model_server(workspace, entry, environment, say)
        except MlaasError as error:
            part = model_server_part(entry.name)
            supervisor.note_problem(workspace, part, str(error))
            say(f"{part}: not started: {error}")


def model_server_names(workspace: Workspace) -> list[str]:
    """The model servers recorded as started, by part name."""
    folder = supervisor.run_dir(workspace)
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("serve-*.json"))
