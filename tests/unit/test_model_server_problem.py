"""A model server the platform cannot start says why in its pipeline's view, not a bare `down`:
two stacks on one machine both hand out ports from 3001, and the second server to start would
otherwise wait without a word."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import shrink

from mlaas.cli.platform import down
from mlaas.control.model_servers import ensure_model_servers
from mlaas.control.operations import model_server_view
from mlaas.core.records import ModelVersionRef, Packaged
from mlaas.core.settings import Settings
from mlaas.stores.catalog import Catalog
from mlaas.stores.files import write_whole
from mlaas.stores.workspace import Workspace


def test_a_model_server_whose_port_is_held_says_so_until_the_platform_is_down(
    project_settings: Settings, tmp_path: Path
) -> None:
    workspace = Workspace(tmp_path / "home")
    with socket.socket() as holder:  # another program on the pipeline's port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = shrink(project_settings, "held", serve={"port": port})
        Catalog(workspace).create("held", settings.as_params(), {})
        champion = ModelVersionRef(name="held", version=1, run_id="r1", model_uri="models:/held/1")
        packaged = Packaged(
            version=champion, model_tag="held:v1", bento_tag="held:v1", newly_built=True
        )
        write_whole(workspace.pipeline("held").package_result, packaged.model_dump_json())
        said: list[str] = []
        ensure_model_servers(workspace, said.append)
        view = model_server_view(workspace, "held", settings)

    assert view.state == "down"
    assert view.problem is not None
    assert f"port {port} on 127.0.0.1 is already in use" in view.problem
    assert said == [f"serve-held: not started: {view.problem}"]
    down(workspace, [], say=said.append)  # nothing retries it once the platform is down
    assert model_server_view(workspace, "held", settings).problem is None
