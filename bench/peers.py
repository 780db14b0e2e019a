"""The peers benchmark: `mlaas serve` against the servers a user would pick instead, the same
registered champion and the same body in each, load from `wrk` (a C load generator: a Python
one spends the cores the servers need), rounds interleaved.

Servers, each a real process on loopback:
- bare: an ASGI app on uvicorn that reads the body, parses it and answers a constant: what
  Python HTTP itself allows here, the row every other is a ratio of;
- bare_h11: the same on uvicorn's pure-Python parser and loop (without httptools and uvloop);
- handwritten: FastAPI + uvicorn + pydantic + `mlflow.pyfunc` around the registered model;
- mlflow: `mlflow models serve` of the registered model (`--env-manager local`);
- mlaas: `mlaas serve` with its defaults (adaptive batching, prediction log, hot-swap polling),
  and mlaas_no_batching: `mlaas serve --no-batching`.

Measured for each: requests/s, p50 and p99 at 64 connections, p50 at one, errors (non-2xx and
socket errors), and requests/s as a share of the bare row's. Also here, for the startup group:
the cold start of `mlaas serve` beside `mlflow models serve` (`cold_start`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import TABLES_DIR, Comparison, interleaved, machine, save
from bench.serving import Served
from mlaas.serving.processes import free_port, server_process, server_started
from mlaas.stores.registry import CHAMPION

PEERS = ("bare", "bare_h11", "handwritten", "mlflow", "mlaas", "mlaas_no_batching")
# The models measured, as (key, config, changes to its sections, what BENCHMARKS.md calls it):
# the image CNN whose forward pass is a fraction of a request, a tabular model, and MiniLM,
# whose forward pass is milliseconds (where batching must pay).
MODELS: tuple[tuple[str, str, dict[str, dict[str, Any]], str], ...] = (
    ("mnist", "params.yaml", {}, "the MNIST CNN of params.yaml (digits in quick mode)"),
    (
        "tabular",
        "configs/breast_cancer_logistic_regression.yaml",
        {},
        "logistic regression on breast_cancer (30 numeric columns)",
    ),
    (
        "minilm",
        "configs/movie_reviews_minilm.yaml",
        {"load": {"max_rows": 1500}, "validate": {"min_rows": 100}},
        "MiniLM (6 layers) and its head on rotten_tomatoes, one review per request",
    ),
)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
POST_BODY_SCRIPT = """local file = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_s: float
    p99_s: float
    errors: int
    """Answers other than 2xx/3xx, and connect, read, write and timeout errors."""


def parse_wrk(output: str) -> WrkResult:
    """The figures of `wrk --latency` output. Raises ValueError naming what is missing."""

    def found(pattern: str) -> tuple[str, ...]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{output}")
        return match.groups()

    def percentile(share: str) -> float:
        value, unit = found(rf"^\s*{share}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        return float(value) * _UNITS[unit]

    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    return WrkResult(
        requests_per_second=float(found(r"^Requests/sec:\s+([\d.]+)")[0]),
        p50_s=percentile("50"),
        p99_s=percentile("99"),
        errors=errors,
    )


def wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    if not url.startswith("http://127.0.0.1"):
        raise SystemExit("load is only ever sent to loopback")
    # One thread: it drives 64 connections on its event loop, and the cores stay the servers'.
    # A 30 s timeout (the servers' own): a slow answer is a latency, not an error (wrk's 2 s
    # default counted MiniLM's unbatched answers under 64 connections as failures).
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
    command += ["--latency", "-s", str(script)]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return parse_wrk(done.stdout)


@contextmanager
def uvicorn_app(
    app: str, ready_path: str, log: Path, environment: dict[str, str], *options: str
) -> Iterator[str]:
    """An app of bench/peer_apps.py on uvicorn: with its defaults (httptools and uvloop when
    installed, as under BentoML), or `options`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log", *options]
    with server_started(command, f"{base}{ready_path}", log, 180, environment):
        yield f"{base}/predict"


@contextmanager
def _mlflow_serve(model_uri: str, log: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    scripts = Path(sys.executable).parent
    command = [str(scripts / "mlflow"), "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    # It starts `uvicorn` by name: the environment's own.
    environment = os.environ | {"PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    with server_started(command, f"{base}/ping", log, 180, environment):
        yield f"{base}/invocations"


@contextmanager
def _mlaas_serve(target: Served, log: Path, *flags: str) -> Iterator[str]:
    with server_process(target.params, target.workspace, log, *flags) as server:
        yield f"{server.url}/predict"


def _model_uri(target: Served) -> str:
    return f"models:/{target.settings.pipeline.name}@{CHAMPION}"


def cold_start(target: Served, quick: bool) -> Comparison:
    """Seconds from starting the server to its first answer to the body: `mlaas serve` against
    `mlflow models serve` of the same champion, rounds interleaved."""
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-cold-"))

    def first_answer(start: AbstractContextManager[str]) -> float:
        started = time.perf_counter()
        with start as url:
            answer = httpx.post(url, json=target.body, timeout=60)
            elapsed = time.perf_counter() - started
            answer.raise_for_status()
        return elapsed

    mlflow_times, mlaas_times = interleaved(
        lambda: first_answer(_mlflow_serve(_model_uri(target), scratch / "mlflow.log")),
        lambda: first_answer(_mlaas_serve(target, scratch / "mlaas.log")),
        rounds=1 if quick else 3,
    )
    comparison = Comparison(
        name="serve_cold_start",
        a_label="mlflow models serve: start to the first answer",
        b_label="mlaas serve: start to the first answer",
        unit="s",
        a_samples=mlflow_times,
        b_samples=mlaas_times,
        target="mlaas serve to the first 200 ≤ 5 s",
        met=None,
    )
    comparison.met = comparison.b_median <= 5.0
    save(comparison, quick)
    return comparison


@contextmanager
def _peers(target: Served, scratch: Path) -> Iterator[dict[str, str]]:
    """Every server of the benchmark, started and ready: name -> URL to POST the body to."""
    model_uri = _model_uri(target)
    environment = dict(os.environ) | {"MLAAS_PEER_MODEL_URI": model_uri}
    with ExitStack() as servers:
        urls = {
            "bare": servers.enter_context(
                uvicorn_app("bench.peer_apps:bare", "/", scratch / "bare.log", environment)
            ),
            # uvicorn's pure-Python parser and loop: what it falls back to without httptools
            # and uvloop (the bare row the performance issue was written against).
            "bare_h11": servers.enter_context(
                uvicorn_app(
                    "bench.peer_apps:bare",
                    "/",
                    scratch / "bare_h11.log",
                    environment,
                    *("--http", "h11", "--loop", "asyncio"),
                )
            ),
            "handwritten": servers.enter_context(
                uvicorn_app(
                    "bench.peer_apps:handwritten", "/docs", scratch / "fastapi.log", environment
                )
            ),
            "mlflow": servers.enter_context(_mlflow_serve(model_uri, scratch / "mlflow.log")),
            "mlaas": servers.enter_context(_mlaas_serve(target, scratch / "mlaas.log")),
            "mlaas_no_batching": servers.enter_context(
                _mlaas_serve(target, scratch / "unbatched.log", "--no-batching")
            ),
        }
        for name, url in urls.items():  # each answers the body, or its errors mean nothing
            answer = httpx.post(url, json=target.body, timeout=30)
            if answer.status_code != 200:
                raise SystemExit(f"{name} answered {answer.status_code}: {answer.text[:300]}")
        yield urls


@dataclass(frozen=True)
class PeerRow:
    server: str
    requests_per_second: float
    p50_64_ms: float
    p99_64_ms: float
    p50_1_ms: float
    errors: int
    share_of_bare: float


def peers(target: Served, quick: bool, key: str, described: str) -> list[PeerRow]:
    """Each server at 64 connections and at 1, `rounds` times, the servers in turn (their order
    rotating each round); medians of the rounds. Saved for BENCHMARKS.md as `peers_KEY`;
    `described`: the model, in words."""
    if shutil.which("wrk") is None:
        raise SystemExit("the peers benchmark needs wrk (Debian package `wrk`): `make bench`")
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-peers-"))
    body = scratch / "body.json"
    body.write_text(json.dumps(target.body))
    script = scratch / "post.lua"
    script.write_text(POST_BODY_SCRIPT.format(body=body))
    rounds, seconds = (1, 1.0) if quick else (3, 8.0)
    runs: dict[str, list[tuple[WrkResult, WrkResult]]] = {name: [] for name in PEERS}
    with _peers(target, scratch) as urls:
        for url in urls.values():  # warm-up, dropped
            wrk(url, script, 64, 1.0 if quick else 3.0)
        for round_number in range(rounds):
            order = PEERS[round_number % len(PEERS) :] + PEERS[: round_number % len(PEERS)]
            for name in order:
                many = wrk(urls[name], script, 64, seconds)
                one = wrk(urls[name], script, 1, seconds)
                runs[name].append((many, one))
    bare_rps = statistics.median(many.requests_per_second for many, _ in runs["bare"])
    rows = []
    for name in PEERS:
        many_runs = [many for many, _ in runs[name]]
        rps = statistics.median(run.requests_per_second for run in many_runs)
        rows.append(
            PeerRow(
                server=name,
                requests_per_second=rps,
                p50_64_ms=statistics.median(run.p50_s for run in many_runs) * 1000,
                p99_64_ms=statistics.median(run.p99_s for run in many_runs) * 1000,
                p50_1_ms=statistics.median(one.p50_s for _, one in runs[name]) * 1000,
                errors=sum(many.errors + one.errors for many, one in runs[name]),
                share_of_bare=rps / bare_rps,
            )
        )
    _save(f"peers_{key}", described, rows, rounds, seconds, quick)
    return rows


def _save(
    name: str, described: str, rows: list[PeerRow], rounds: int, seconds: float, quick: bool
) -> Path:
    TABLES_DIR.mkdir(parents=True, exist_ok=True)
    path = TABLES_DIR / f"{name}{'-quick' if quick else ''}.json"
    record = {
        "name": name,
        "model": described,
        "rows": [asdict(row) for row in rows],
        "rounds": rounds,
        "seconds": seconds,
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python", "-m", "bench", *sys.argv[1:]]),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
