"""A bounded soak of the served endpoint: many clients for minutes, on loopback only.

    python -m bench.soak                       2 minutes, 32 clients, the default pipeline
    python -m bench.soak --seconds 20 --quick  digits instead of MNIST, a short soak

Load comes from a separate process (`bench.load`). Reported: requests, errors, p50 and p99
latency, throughput, and the server's resident memory (leader and workers) after the warm-up and
at the end: a server that leaks grows between the two. The promise (RELIABILITY.md): zero
errors, and memory at the end within 10% of after warm-up.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS_DIR, machine

PROJECT = Path(__file__).resolve().parents[1]
MAX_MEMORY_GROWTH = 0.10


@dataclass(frozen=True)
class SoakResult:
    clients: int
    seconds: float
    requests: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    throughput_rps: float
    rss_after_warmup_mb: float
    rss_at_end_mb: float

    @property
    def memory_growth(self) -> float:
        return self.rss_at_end_mb / self.rss_after_warmup_mb - 1

    @property
    def held(self) -> bool:
        """The promise: no errors at all, and no more than 10% memory growth."""
        return not self.errors and self.memory_growth <= MAX_MEMORY_GROWTH

    def line(self) -> str:
        return (
            f"soak: {self.clients} clients × {self.seconds:.0f} s: {self.requests} requests, "
            f"{sum(self.errors.values())} errors, p50 {self.p50_ms:.1f} ms, p99 "
            f"{self.p99_ms:.1f} ms, {self.throughput_rps:.0f} req/s; memory "
            f"{self.rss_after_warmup_mb:.0f} → {self.rss_at_end_mb:.0f} MB "
            f"({self.memory_growth:+.1%})"
        )


def _load(url: str, body: Path, clients: int, requests: int, seconds: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.load", f"{url}/predict", str(body)]
    command += ["--concurrency", str(clients), "--requests", str(requests)]
    command += ["--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=PROJECT)
    return dict(json.loads(done.stdout))


def soak(
    url: str,
    body: dict[str, Any],
    resident_bytes: Callable[[], int],
    clients: int = 32,
    seconds: float = 120,
    warmup_requests: int = 1000,
) -> SoakResult:
    """Warm the server up, note its memory, soak it for `seconds`, note its memory again."""
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-soak-"))
    body_file = scratch / "body.json"
    body_file.write_text(json.dumps(body))
    warmup = _load(url, body_file, clients, warmup_requests, seconds=max(seconds, 60))
    rss_warm = resident_bytes()
    # Bounded in time and in count: at most 2,000 requests per second on average.
    run = _load(url, body_file, clients, requests=int(2000 * seconds), seconds=seconds)
    rss_end = resident_bytes()
    latencies = np.asarray(run["latencies"]) * 1000
    errors = {**warmup["errors"]}
    for status, count in run["errors"].items():
        errors[status] = errors.get(status, 0) + count
    return SoakResult(
        clients=clients,
        seconds=seconds,
        requests=len(run["latencies"]) + sum(run["errors"].values()),
        errors=errors,
        p50_ms=float(np.percentile(latencies, 50)) if latencies.size else float("nan"),
        p99_ms=float(np.percentile(latencies, 99)) if latencies.size else float("nan"),
        throughput_rps=len(run["latencies"]) / run["elapsed"],
        rss_after_warmup_mb=rss_warm / 2**20,
        rss_at_end_mb=rss_end / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="digits instead of MNIST")
    args = parser.parse_args()

    from mlaas.stores.workspace import Workspace, apply_environment

    workspace = Workspace(Path(tempfile.mkdtemp(prefix="mlaas-soak-home-")))
    apply_environment(workspace)
    from bench.serving import prepare
    from mlaas.serving.processes import server_process

    target = prepare(workspace, args.quick)
    log = workspace.home / "serve.log"
    with server_process(target.params, workspace, log) as server:
        result = soak(server.url, target.body, server.resident_bytes, args.clients, args.seconds)
    print(result.line())
    # Beside the benchmarks' results, not among them: BENCHMARKS.md is built from those.
    folder = RESULTS_DIR / "reliability"
    folder.mkdir(parents=True, exist_ok=True)
    record = asdict(result) | {
        "memory_growth": result.memory_growth,
        "held": result.held,
        "machine": machine(),
        "command": " ".join(["python", "-m", "bench.soak", *sys.argv[1:]]),
    }
    (folder / "soak.json").write_text(json.dumps(record, indent=2) + "\n")
    sys.exit(0 if result.held else 1)


if __name__ == "__main__":
    main()
