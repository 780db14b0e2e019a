"""Benchmarks 6 and 8: the orchestration and tracking tax, and scaling with the data's size.

6. `mlaas run` (Prefect flow, MLflow tracking and registry, BentoML packaging) against the same
   stage functions called directly with no orchestration, tracking or packaging
   (`python -m bench.direct`), both as fresh processes on a fresh MLAAS_HOME, rounds
   interleaved. Beside it, the fixed costs: one Prefect task, one flow, one MLflow epoch log.
8. The stages load -> validate -> split -> train (1 epoch) -> evaluate at 1x, 10x and 100x the
   default data (synthetic replicas of MNIST-5k): time and peak resident memory per stage.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from bench.common import Comparison, interleaved, save
from mlaas.core.settings import Settings, load_settings
from mlaas.stores.workspace import Workspace

PROJECT = Path(__file__).resolve().parents[1]


def _params(quick: bool, folder: Path) -> Path:
    params = load_settings(PROJECT / "params.yaml").as_params()
    params["pipeline"]["name"] = "bench-orchestration"
    if quick:
        params["load"]["source"] = "digits"
        params["validate"]["min_rows"] = 100
        params["train"]["max_epochs"] = 1
    params["package"] = {
        "bentofile": str(PROJECT / "bentofile.yaml"),
        "build_context": str(PROJECT / "src"),
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _wall_time(command: list[str], home: Path, environment: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        cwd=PROJECT,
        env={**os.environ, "MLAAS_HOME": str(home), **(environment or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def fixed_costs(rounds: int = 5, tasks: int = 20) -> dict[str, float]:
    """Median seconds of one trivial Prefect task, one empty flow, one MLflow epoch log."""
    from prefect import flow, task

    from mlaas.stores.tracking import Tracker

    @task
    def nothing(value: int) -> int:
        return value

    @flow
    def empty() -> None:
        pass

    @flow
    def many() -> None:
        for value in range(tasks):
            nothing(value)

    empty()  # starts the ephemeral API server once; not counted
    flow_times, task_times = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        empty()
        flow_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        many()
        task_times.append((time.perf_counter() - started - flow_times[-1]) / tasks)
    tracker = Tracker(Workspace(Path(tempfile.mkdtemp(prefix="mlaas-bench-"))))
    run_id = tracker.start_run("bench", "fixed-costs", {}, {})
    log_times = []
    for epoch in range(rounds * 4):
        started = time.perf_counter()
        tracker.log_metrics(
            run_id, {"train_loss": 0.1, "val_loss": 0.2, "val_accuracy": 0.9}, epoch
        )
        log_times.append(time.perf_counter() - started)
    return {
        "prefect_flow_s": float(np.median(flow_times)),
        "prefect_task_s": float(np.median(task_times)),
        "mlflow_epoch_log_s": float(np.median(log_times)),
    }


def orchestration_tax(workspace: Workspace, quick: bool) -> list[Comparison]:
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    params = _params(quick, scratch)
    rounds = 1 if quick else 3
    counter = iter(range(1000))

    def direct() -> float:
        command = [sys.executable, "-m", "bench.direct", str(params)]
        return _wall_time(command, scratch / f"direct-{next(counter)}")

    def orchestrated() -> float:
        command = [str(Path(sys.executable).parent / "mlaas"), "run", "--params", str(params)]
        return _wall_time(command, scratch / f"flow-{next(counter)}")

    direct_times, flow_times = interleaved(direct, orchestrated, rounds, warmup=0)
    tax = Comparison(
        name="orchestration_tax",
        a_label="stage functions called directly (no Prefect, MLflow, BentoML)",
        b_label="mlaas run (Prefect flow, MLflow tracking + registry, Bento build)",
        unit="s per pipeline run (fresh process and MLAAS_HOME)",
        a_samples=direct_times,
        b_samples=flow_times,
        target="≤ 1.1× on the default data, fixed cost ≤ 5 s",
        met=None,
        extra=fixed_costs(rounds=2, tasks=5) if quick else fixed_costs(),
    )
    tax.extra["fixed_overhead_s"] = tax.b_median - tax.a_median
    tax.met = tax.ratio <= 1.1 and tax.extra["fixed_overhead_s"] <= 5.0
    save(tax, quick)
    # The last orchestrated run's workspace holds a finished run: run it again as it is.
    return [tax, no_change_run(params, scratch / f"flow-{next(counter) - 1}", quick)]


def no_change_run(params: Path, home: Path, quick: bool) -> Comparison:
    """`mlaas run` again with the same data, settings and code (every cached stage a cache
    hit), on a temporary Prefect server of its own and on a Prefect server already running for
    the workspace (`make up`'s, which the run finds by itself; here one started as `make up`
    starts it, so that no scheduled run interferes). Rounds interleaved."""
    from mlaas.cli.platform import prefect_part
    from mlaas.serving.processes import free_port, server_started

    mlaas = str(Path(sys.executable).parent / "mlaas")
    command = [mlaas, "run", "--params", str(params)]
    rounds = 1 if quick else 5
    prefect = prefect_part(free_port())  # the Prefect server exactly as `make up` starts it
    with server_started(
        prefect.command,
        prefect.ready_urls[0],
        home / "prefect-server.log",
        environment={**os.environ, **Workspace(home).environment()},
    ):
        on_its_own, on_the_server = interleaved(
            lambda: _wall_time(command, home),
            lambda: _wall_time(command, home, {"PREFECT_API_URL": f"{prefect.url}/api"}),
            rounds,
            warmup=0 if quick else 1,
        )
    comparison = Comparison(
        name="no_change_run",
        a_label="mlaas run, nothing changed, starting a temporary Prefect server of its own",
        b_label="mlaas run, nothing changed, on the running Prefect server (`make up`'s)",
        unit="s (fresh process, end to end)",
        a_samples=on_its_own,
        b_samples=on_the_server,
        target="a run with nothing changed ≤ 5 s end to end",
        met=None,
    )
    comparison.met = comparison.b_median <= 5.0
    save(comparison, quick)
    return comparison


def cli_start(quick: bool) -> Comparison:
    """`mlaas --help` against the interpreter starting and doing nothing, each a fresh process,
    rounds interleaved: what a user waits for before any command does its work."""
    mlaas = str(Path(sys.executable).parent / "mlaas")
    home = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    rounds = 2 if quick else 7
    bare, helped = interleaved(
        lambda: _wall_time([sys.executable, "-c", "pass"], home),
        lambda: _wall_time([mlaas, "--help"], home),
        rounds,
    )
    comparison = Comparison(
        name="cli_start",
        a_label="python -c pass (the interpreter alone)",
        b_label="mlaas --help",
        unit="s (fresh process)",
        a_samples=bare,
        b_samples=helped,
        target="mlaas --help ≤ 1 s",
        met=None,
    )
    comparison.met = comparison.b_median <= 1.0
    save(comparison, quick)
    return comparison


class PeakMemory:
    """Samples the resident memory of this process and its children (training runs in one)
    every 20 ms; `peak` since the last `reset`."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def resident(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child may end between list and read
                total += child.memory_info().rss
        return total

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.resident())
            time.sleep(0.02)

    def reset(self) -> int:
        self.peak = self.resident()
        return self.peak

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def scaling(quick: bool) -> list[Comparison]:
    """Time and peak memory per stage at growing replicas of the default data."""
    from mlaas.families import image
    from mlaas.stages.table import run_stage

    factors = [1, 2] if quick else [1, 10, 100]
    base_source = "digits" if quick else "mnist"
    images, labels = image.SOURCES[base_source].read()

    def replicas(factor: int) -> Any:
        def read() -> tuple[np.ndarray, np.ndarray]:
            # Shifted copies, not the same bytes again: a real larger data set.
            copies = [np.roll(images, shift, axis=2) for shift in range(factor)]
            return np.concatenate(copies), np.tile(labels, factor)

        return read

    stages = ("load", "validate", "split", "train", "evaluate")
    memory = PeakMemory()
    results: dict[int, dict[str, dict[str, float]]] = {}
    for factor in factors:
        name = f"{base_source}_x{factor}"
        shape, classes = image.SOURCES[base_source].shape, image.SOURCES[base_source].classes
        image.SOURCES[name] = image.ImageSource(replicas(factor), shape, classes)
        params = load_settings(PROJECT / "params.yaml").as_params()
        params["pipeline"]["name"] = f"bench-scaling-{factor}"
        params["load"]["source"] = name
        params["validate"]["min_rows"] = 100
        params["train"]["max_epochs"] = 1
        if quick:
            params["train"]["model"]["conv_channels"] = [8]
        settings = Settings.model_validate(params)
        workspace = Workspace(Path(tempfile.mkdtemp(prefix="mlaas-bench-scaling-")))
        results[factor] = {}
        for stage in stages:
            before = memory.reset()
            started = time.perf_counter()
            run_stage(stage, settings, workspace)
            seconds = time.perf_counter() - started
            results[factor][stage] = {
                "seconds": seconds,
                "peak_extra_mb": (memory.peak - before) / 2**20,
            }
        del image.SOURCES[name]
    memory.stop()
    data_mb = {factor: images.astype(np.float32).nbytes * factor / 2**20 for factor in factors}
    comparisons = []
    largest = factors[-1]
    for stage in stages:
        stage_seconds = [results[f][stage]["seconds"] for f in factors]
        comparison = Comparison(
            name=f"scaling_{stage}",
            a_label=f"1x ({len(labels)} images)",
            b_label=f"{largest}x ({len(labels) * largest} images)",
            unit="s",
            a_samples=[stage_seconds[0]],
            b_samples=[stage_seconds[-1]],
            target=f"time grows no faster than the data (≤ {largest}x); memory ≤ 1.5 copies",
            met=None,
            extra={
                f"{f}x": f"{results[f][stage]['seconds']:.2f} s, "
                f"+{results[f][stage]['peak_extra_mb']:.0f} MB peak "
                f"(data {data_mb[f]:.0f} MB as float32)"
                for f in factors
            },
        )
        copies = results[largest][stage]["peak_extra_mb"] / data_mb[largest]
        comparison.extra["copies_of_the_data_at_largest"] = round(copies, 2)
        comparison.met = comparison.ratio <= largest * 1.1 and copies <= 1.5
        save(comparison, quick)
        comparisons.append(comparison)
    return comparisons
