"""The peers benchmark's own parts: the bare server it measures against, and what it reads of
wrk's output (real wrk, real uvicorn, on loopback, a second each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench.peers import POST_BODY_SCRIPT, parse_wrk, uvicorn_app, wrk


@pytest.mark.slow
def test_wrk_against_the_bare_server_reads_throughput_latency_and_errors(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"instances": [[1, 2, 3]]}')
    bad.write_text("not json")  # the bare server fails on it: 500s, which wrk counts
    environment = dict(os.environ)
    with uvicorn_app("bench.peer_apps:bare", "/", tmp_path / "bare.log", environment) as url:
        results = {}
        for body in (good, bad):
            script = tmp_path / f"{body.stem}.lua"
            script.write_text(POST_BODY_SCRIPT.format(body=body))
            results[body.stem] = wrk(url, script, connections=4, seconds=1)
    answered = results["good"]
    assert answered.requests_per_second > 0 and answered.errors == 0
    assert 0 < answered.p50_s <= answered.p99_s < 1
    refused = results["bad"]
    assert refused.errors > 0 and refused.errors >= refused.requests_per_second / 2


def test_wrk_output_without_figures_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("Running 1s test\n  Latency Distribution\n     50%  1.00ms\n     99%  2.00ms\n")
