"""`python -m bench --quick`: every benchmark runs end to end on tiny sizes (no timings are
asserted; the numbers live in BENCHMARKS.md, from `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow
EXPECTED = (
    "training_tax",
    "data_path",
    "validation_mnist_100",
    "validation_mnist_100000",
    "serving_tax",
    "batching_throughput",
    "batching_p99",
    "batching_single_client",
    "orchestration_tax",
    "scaling_train",
)


def test_every_benchmark_runs_in_quick_mode(tmp_path: Path) -> None:
    env = {**os.environ, "MLAAS_BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in EXPECTED:
        result = json.loads((tmp_path / f"{name}-quick.json").read_text())
        assert result["a_samples"] and result["b_samples"], name
        assert result["ratio"] > 0, name
