"""Prefect's own CLI and Python client work on mlaas's Prefect state (issue 9, point 2).

With Prefect 3.8.8 on the pinned fastapi every list call (`prefect flow-run ls`, `deployment ls`,
`work-pool ls`, `get_client().read_flow_runs()`) answered 422 `body.limit: Input should be a
valid integer`; an operator must be able to inspect and drive what mlaas ran with Prefect's tools.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow

FLOW_AND_CLIENT = """
from prefect import flow, get_client

@flow(name="mlaas_state_probe")
def probe() -> int:
    return 1

probe()
with get_client(sync_client=True) as client:
    runs = client.read_flow_runs()
    print("flow runs:", [run.name for run in runs], [run.state_name for run in runs])
"""


def workspace_environment(workspace: Workspace) -> dict[str, str]:
    """The environment `mlaas` itself runs Prefect in: its ephemeral API on the workspace."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PREFECT_") or key == "PREFECT_LOGGING_LEVEL"
    }
    # Wide enough that Prefect's tables print whole names and states.
    return {**environment, **workspace.environment(), "COLUMNS": "250"}


def run(command: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=300, check=False
    )


def test_prefect_cli_and_client_list_what_mlaas_ran(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "home")
    workspace.ensure_writable()  # what `mlaas` does first: creates the state folders
    environment = workspace_environment(workspace)
    ran = run([sys.executable, "-c", FLOW_AND_CLIENT], environment)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "flow runs:" in ran.stdout and "'Completed'" in ran.stdout, ran.stdout

    prefect = str(Path(sys.executable).parent / "prefect")
    outputs = {}
    for listing in ("flow-run", "deployment", "work-pool"):
        listed = run([prefect, listing, "ls"], environment)
        outputs[listing] = listed.stdout + listed.stderr
        assert listed.returncode == 0, f"prefect {listing} ls:\n{outputs[listing][-3000:]}"
        assert "valid integer" not in outputs[listing], outputs[listing][-3000:]
    assert "mlaas_state_probe" in outputs["flow-run"], outputs["flow-run"]
    assert "COMPLETED" in outputs["flow-run"], outputs["flow-run"]
