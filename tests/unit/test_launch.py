"""What `mlaas serve` checks and builds before BentoML starts: the address, and a Prometheus
folder of each server's own."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

import mlaas
from mlaas.core.errors import MlaasError
from mlaas.serving.launch import bentoml_serve_command, ensure_port_free
from mlaas.serving.processes import free_port
from mlaas.stores.workspace import Workspace


def test_a_port_in_use_names_the_port_and_how_to_pick_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MlaasError, match=rf"port {port} on 127\.0\.0\.1 is already in use"):
            ensure_port_free("127.0.0.1", port)
        with pytest.raises(MlaasError, match=r"--port N.*PORT=N"):
            ensure_port_free("0.0.0.0", port)  # the wildcard address covers loopback too


def test_a_free_port_passes() -> None:
    ensure_port_free("127.0.0.1", free_port())


def test_a_host_that_is_no_ip_address_is_named() -> None:
    with pytest.raises(MlaasError, match=r"serve.host 'localhost' is not an IP address"):
        ensure_port_free("localhost", free_port())


def test_each_server_address_has_its_own_metrics_folder(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    folders = {
        workspace.metrics_dir("127.0.0.1", 3311),
        workspace.metrics_dir("127.0.0.1", 3313),
        workspace.metrics_dir("::1", 3311),
    }
    assert len(folders) == 3
    assert all(folder.parent.parent == workspace.bentoml_home for folder in folders)


def test_the_command_hands_bentoml_the_metrics_folder(tmp_path: Path) -> None:
    command = bentoml_serve_command("digits:abc", "127.0.0.1", 3311, tmp_path, "--arg", "x=1")
    code = command[command.index("-c") + 1]
    assert "prometheus_multiproc_dir.set(sys.argv.pop(1))" in code
    assert command[command.index("-c") + 2 :] == [
        *(str(tmp_path), "serve", "digits:abc", "--host", "127.0.0.1", "--port", "3311"),
        *("--arg", "x=1"),
    ]


def test_only_the_bento_store_module_reaches_bentoml_private_api() -> None:
    # BentoML offers no public setting for its store's location or its Prometheus folder: one
    # module reads them, so an upgrade that moves them breaks in one place. (The gateway names
    # BentoML's access logger by its module path: a logger name, not an import.)
    package = Path(mlaas.__file__).parent
    reaching = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"\b(from|import)\s+bentoml\._internal", path.read_text())
    }
    assert reaching == {"stores/bento_store.py"}
