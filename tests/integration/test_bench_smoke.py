"""`python -m bench --quick`: every benchmark runs end to end on tiny sizes (no timings are
asserted; the numbers live in BENCHMARKS.md, from `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import GROUPS
from bench.peers import PEERS
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow
EXPECTED = (
    "training_tax",
    "data_path",
    "ddp_ranks",
    "validation_mnist_100",
    "validation_mnist_100000",
    "serving_tax",
    "batching_throughput",
    "batching_p99",
    "batching_single_client",
    "prediction_log_throughput",
    "serving_workers",
    "cli_start",
    "orchestration_tax",
    "no_change_run",
    "scaling_train",
    "tuning_parallel",
    "serve_cold_start",
)
# Two `--only` runs side by side, each with its own workspace: most of a quick benchmark is
# waiting on servers and subprocesses, and no timing is read here. About equal halves.
SIDE_BY_SIDE = (
    ("training", "validation", "serving", "startup"),
    ("pipeline", "tuning", "peers"),
)


def test_the_side_by_side_runs_cover_every_group() -> None:
    assert sorted(group for run in SIDE_BY_SIDE for group in run) == sorted(GROUPS)


def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    env = {**os.environ, "MLAAS_BENCH_RESULTS": str(tmp_path)}
    runs = []
    for groups in SIDE_BY_SIDE:
        log = tmp_path / f"{'-'.join(groups)}.log"
        with log.open("w") as output:
            command = [sys.executable, "-m", "bench", "--quick", "--only", *groups]
            process = subprocess.Popen(
                command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        runs.append((process, log))
    try:
        returncodes = [process.wait(timeout=900) for process, _ in runs]
    finally:
        for process, _ in runs:
            process.kill()  # only a run still going after the timeout: the others have ended
            process.wait()
    for returncode, (_, log) in zip(returncodes, runs, strict=True):
        assert returncode == 0, log.read_text()[-6000:]
    for name in EXPECTED:
        result = json.loads((tmp_path / f"{name}-quick.json").read_text())
        assert result["a_samples"] and result["b_samples"], name
        assert result["ratio"] > 0, name
    # The peers table (quick: the image model only): every server answered under wrk's load.
    # Errors are for BENCHMARKS.md to report; here a server fails only if it answered hardly
    # any of a second's requests (a stray dropped connection on a loaded CI machine is not
    # this test's business).
    peers = json.loads((tmp_path / "tables" / "peers_mnist-quick.json").read_text())
    rows = {row["server"]: row for row in peers["rows"]}
    assert sorted(rows) == sorted(PEERS)
    for name, row in rows.items():
        answered = row["requests_per_second"] * peers["seconds"]
        assert answered > 0 and row["errors"] <= 0.01 * answered, (name, row)
