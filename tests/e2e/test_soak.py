"""A short soak of the real server (the 2-minute one is `make reliability`): many concurrent
clients on loopback, zero errors, and no memory growth past 10% after the warm-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.soak import MAX_MEMORY_GROWTH, soak

from mlaas.serving.processes import server_process
from mlaas.stores.workspace import Workspace

pytestmark = pytest.mark.slow


def test_short_soak_has_no_errors_and_no_memory_growth(
    pipeline_run: dict[str, Any], session_workspace: Workspace, tmp_path: Path
) -> None:
    body = {"instances": [[[0.0] * 8 for _ in range(8)]]}  # one blank 8×8 digit
    log = tmp_path / "serve.log"
    with server_process(pipeline_run["params"], session_workspace, log) as server:
        result = soak(
            server.url, body, server.resident_bytes, clients=16, seconds=15, warmup_requests=500
        )
    print(result.line())
    assert result.requests > 100, result.line()
    assert result.errors == {}, result.line()
    assert result.memory_growth <= MAX_MEMORY_GROWTH, result.line()
