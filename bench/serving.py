"""Benchmarks 4 and 5: the serving tax and adaptive batching, against real `bentoml serve`
processes on loopback (load from a separate process, bounded in requests and time).

4. POST /predict through the server against the same model called in-process (features,
   forward pass, served form), one client, one instance per request, in alternating blocks of
   requests (request-by-request alternation lets the client's idle PyTorch threads spin on the
   server's cores). Reported: p50 of each and the p50 overhead.
5. The same server with adaptive batching on and off (`mlaas serve --no-batching`): throughput
   and p99 at 64 concurrent clients, and latency at one client.
6. The same server with the prediction log on and off (`mlaas serve --no-prediction-log`):
   throughput at 64 concurrent clients, each round in turn.
7. The same Bento served by two worker processes (`mlaas serve --workers 2`) and by one:
   throughput at 64 concurrent clients, each round in turn.

Until the `MLAAS_SERVER_OPTIONS` fix (issue 14), `--no-batching` and `--no-prediction-log`
reached no worker: BentoML replaces `--arg` values with a Bento's own when it loads one, so the
rows 5 and 6 measured before then compared a server with itself.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from bench.common import Comparison, save
from mlaas.core.settings import Settings, load_settings
from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.modeling.models import load_model
from mlaas.serving.processes import served
from mlaas.stages.table import STAGES, run_stage
from mlaas.stores.files import read_table
from mlaas.stores.workspace import Workspace

PROJECT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Served:
    settings: Settings
    params: Path
    workspace: Workspace
    body: dict[str, Any]


def prepare(
    workspace: Workspace,
    quick: bool,
    config: Path = PROJECT / "params.yaml",
    name: str = "bench-serving",
    changes: dict[str, dict[str, Any]] | None = None,
) -> Served:
    """The pipeline of `config` (the default: the MNIST CNN; digits in quick mode) as `name`,
    trained briefly and packaged, with `changes` to its sections: serving costs depend on the
    model's size, not on how well it was trained."""
    params = load_settings(config).as_params()
    params["pipeline"]["name"] = name
    params["train"]["max_epochs"] = 1
    if quick and params["pipeline"]["family"] == "image":
        params["load"]["source"] = "digits"
        params["validate"]["min_rows"] = 100
    for section, values in (changes or {}).items():
        params.setdefault(section, {}).update(values)
    params["package"] = {
        "bentofile": str(PROJECT / "bentofile.yaml"),
        "build_context": str(PROJECT / "src"),
    }
    settings = Settings.model_validate(params)
    path = workspace.home / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params))
    for stage in STAGES:
        run_stage(stage, settings, workspace)
    paths = workspace.pipeline(settings.pipeline.name)
    family = get_family(settings.pipeline.family)
    card = load_model(paths.model_dir).card
    test = read_table(paths.split("test"), "split")
    body = {"instances": family.example_instances(test, card, 1)}
    return Served(settings, path, workspace, body)


def default_server(target: Served) -> AbstractContextManager[str]:
    """`mlaas serve` with the pipeline's own settings: the B side of every serving benchmark,
    started once for all of them (each starts only the variant it compares it with)."""
    log = Path(tempfile.mkdtemp(prefix="mlaas-bench-")) / "serve.log"
    return served(target.params, target.workspace, log)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def serving_tax(target: Served, base: str, quick: bool) -> Comparison:
    """`base`: the server with the default settings (batching and the prediction log on)."""
    paths = target.workspace.pipeline(target.settings.pipeline.name)
    model = load_model(paths.model_dir)
    family = get_family(model.card.family)
    task = task_of(model.card)
    instances = target.body["instances"]
    rounds, block, warmup = (2, 20, 5) if quick else (7, 150, 20)

    def in_process() -> float:
        started = time.perf_counter()
        outputs = model.predict(family.instances_to_features(instances, model.card))
        task.describe(outputs, model.card)
        return time.perf_counter() - started

    with httpx.Client() as client:
        payload = json.dumps(target.body).encode()
        headers = {"content-type": "application/json"}

        def over_http() -> float:
            started = time.perf_counter()
            response = client.post(f"{base}/predict", content=payload, headers=headers)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed

        for _ in range(warmup):  # warm both paths: connections, caches, the dispatcher's model
            over_http(), in_process()
        local: list[float] = []
        remote: list[float] = []
        for _ in range(rounds):
            local += [in_process() for _ in range(block)]
            remote += [over_http() for _ in range(block)]
    comparison = Comparison(
        name="serving_tax",
        a_label="model in-process (features, forward, served form)",
        b_label="POST /predict through bentoml serve",
        unit="s/request",
        a_samples=local,
        b_samples=remote,
        target="p50 overhead ≤ 2 ms",
        met=None,
        extra={"requests": rounds * block, "instances_per_request": len(instances)},
    )
    overhead_ms = (comparison.b_median - comparison.a_median) * 1000
    comparison.extra |= {
        "p50_overhead_ms": overhead_ms,
        "p99_in_process_ms": _percentile(local, 99) * 1000,
        "p99_http_ms": _percentile(remote, 99) * 1000,
    }
    comparison.met = overhead_ms <= 2.0
    save(comparison, quick)
    return comparison


def _load(base: str, body: Path, concurrency: int, requests: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.load", f"{base}/predict", str(body)]
    command += ["--concurrency", str(concurrency), "--requests", str(requests)]
    done = subprocess.run(
        [*command, "--seconds", "120"], capture_output=True, text=True, check=True, cwd=PROJECT
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["throughput"] = len(result["latencies"]) / result["elapsed"]
    return result


def batching(target: Served, batched: str, quick: bool) -> list[Comparison]:
    """`batched`: the server with the default settings, against one started without batching."""
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    body = scratch / "body.json"
    body.write_text(json.dumps(target.body))
    rounds = 1 if quick else 3
    # Quick: enough for 64 clients to overlap and batches to form; no figure is read from it.
    warmup_requests = 64 if quick else 200
    concurrent_requests = 128 if quick else 3000
    single_requests = 20 if quick else 500
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": [], "on-1": [], "off-1": []}
    with served(target.params, target.workspace, scratch / "off.log", "--no-batching") as alone:
        for base in (batched, alone):  # warm-up, dropped
            _load(base, body, 64, warmup_requests)
        for _ in range(rounds):
            runs["on"].append(_load(batched, body, 64, concurrent_requests))
            runs["off"].append(_load(alone, body, 64, concurrent_requests))
            runs["on-1"].append(_load(batched, body, 1, single_requests))
            runs["off-1"].append(_load(alone, body, 1, single_requests))
    errors = {key: [run["errors"] for run in values] for key, values in runs.items()}

    def per_round(key: str, measure: Any) -> list[float]:
        return [float(measure(run)) for run in runs[key]]

    throughput = Comparison(
        name="batching_throughput",
        a_label="batching off, 64 clients",
        b_label="adaptive batching on, 64 clients",
        unit="requests/s",
        a_samples=per_round("off", lambda r: r["throughput"]),
        b_samples=per_round("on", lambda r: r["throughput"]),
        target="≥ 3× throughput with batching",
        met=None,
        extra={"errors": errors, "requests_per_round": concurrent_requests},
    )
    throughput.met = throughput.ratio >= 3.0
    p99 = Comparison(
        name="batching_p99",
        a_label="batching off, 64 clients",
        b_label="adaptive batching on, 64 clients",
        unit="s (p99 latency)",
        a_samples=per_round("off", lambda r: _percentile(r["latencies"], 99)),
        b_samples=per_round("on", lambda r: _percentile(r["latencies"], 99)),
        target="p99 ratio (on / off) ≤ 1.5",
        met=None,
    )
    p99.met = p99.ratio <= 1.5
    single = Comparison(
        name="batching_single_client",
        a_label="batching off, 1 client",
        b_label="adaptive batching on, 1 client",
        unit="s (p50 latency)",
        a_samples=per_round("off-1", lambda r: statistics.median(r["latencies"])),
        b_samples=per_round("on-1", lambda r: statistics.median(r["latencies"])),
        target="latency ratio (on / off) ≤ 1.1 at one client",
        met=None,
    )
    single.met = single.ratio <= 1.1
    for comparison in (throughput, p99, single):
        save(comparison, quick)
    return [throughput, p99, single]


def _throughput_against(
    served_model: Served,
    default: str,
    flags: tuple[str, ...],
    quick: bool,
    default_is: str,
    **comparison: Any,
) -> Comparison:
    """Throughput at 64 clients of the default server (at `default`, side `default_is` of the
    comparison) against one of the same Bento started with `flags` (the other side): each round
    in turn, the order alternating, so neither always runs on a warmer machine; `comparison`:
    the name, labels and target."""
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    body = scratch / "body.json"
    body.write_text(json.dumps(served_model.body))
    rounds = 1 if quick else 5
    requests = 128 if quick else 3000
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    with served(
        served_model.params, served_model.workspace, scratch / "other.log", *flags
    ) as other:
        bases = {"a": default, "b": other} if default_is == "a" else {"a": other, "b": default}
        for url in bases.values():  # warm-up, dropped
            _load(url, body, 64, 64 if quick else 300)
        for round_number in range(rounds):
            for key in ("b", "a") if round_number % 2 == 0 else ("a", "b"):
                runs[key].append(_load(bases[key], body, 64, requests))
    return Comparison(
        unit="requests/s",
        a_samples=[float(run["throughput"]) for run in runs["a"]],
        b_samples=[float(run["throughput"]) for run in runs["b"]],
        met=None,
        extra={
            "errors": {key: [run["errors"] for run in values] for key, values in runs.items()},
            "requests_per_round": requests,
        },
        **comparison,
    )


def prediction_log(target: Served, logged: str, quick: bool) -> Comparison:
    """Throughput at 64 clients with every answer logged (`logged`: the server with the default
    settings), against a server that logs none (target: >= 0.95x)."""
    comparison = _throughput_against(
        target,
        logged,
        ("--no-prediction-log",),
        quick,
        default_is="b",
        name="prediction_log_throughput",
        a_label="prediction log off, 64 clients",
        b_label="prediction log on, 64 clients",
        target="≥ 0.95× throughput with every answer logged",
    )
    comparison.met = comparison.ratio >= 0.95
    save(comparison, quick)
    return comparison


def workers(target: Served, one_worker: str, quick: bool) -> Comparison:
    """Throughput at 64 clients with `mlaas serve --workers 2` against the default server's one
    worker (`one_worker`), the same Bento."""
    comparison = _throughput_against(
        target,
        one_worker,
        ("--workers", "2"),
        quick,
        default_is="a",
        name="serving_workers",
        a_label="1 worker (serve.workers: 1), 64 clients",
        b_label="2 workers (mlaas serve --workers 2), 64 clients",
        target="≥ 1.5× throughput with 2 workers on 2 cores",
    )
    comparison.met = comparison.ratio >= 1.5
    save(comparison, quick)
    return comparison
