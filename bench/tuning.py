"""Benchmark: a hyperparameter search with `tune.parallel: 2` (a local Dask cluster of two
worker processes) against `parallel: 1` (one trial at a time), the same trials in both: a random
sampler seeded by each trial's place draws the same settings whatever runs beside it, and no
pruner stops one arm's trials and not the other's. Each search is the `tune` stage of a real
`mlaas run` in a fresh workspace; its wall time is the stage's own (`SearchResult.seconds`:
asking, fitting every trial, the cluster's start), read from its record.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.common import Comparison, save
from mlaas.core.records import SearchResult
from mlaas.core.settings import load_settings
from mlaas.stores.files import read_json
from mlaas.stores.workspace import Workspace

PROJECT = Path(__file__).resolve().parents[1]
NAME = "bench-tuning"


def _search_seconds(parallel: int, quick: bool, folder: Path) -> float:
    params = load_settings(PROJECT / "params.yaml").as_params()
    params["pipeline"]["name"] = NAME
    params["load"]["source"] = "digits"
    params["validate"]["min_rows"] = 100
    params["train"].update(max_epochs=1 if quick else 8, accelerator="cpu", devices=1)
    params["train"]["early_stopping_patience"] = 8
    params["train"]["model"] = {"name": "cnn", "conv_channels": [16], "hidden_units": 64}
    params["tune"] = {
        "trials": 2 if quick else 6,
        "parallel": parallel,
        "sampler": "random",
        "pruner": "none",
        "search_space": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}},
    }
    params["package"] = {
        "bentofile": str(PROJECT / "bentofile.yaml"),
        "build_context": str(PROJECT / "src"),
    }
    home = Path(tempfile.mkdtemp(prefix="mlaas-bench-tune-", dir=folder))
    path = home / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLAAS_"))}
    subprocess.run(
        [
            str(Path(sys.executable).parent / "mlaas"),
            "--home",
            str(home),
            "run",
            *("--params", str(path)),
        ],
        check=True,
        cwd=PROJECT,
        env={**inherited, **Workspace(home).environment()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = Workspace(home).pipeline(NAME).search_record
    return SearchResult.model_validate(read_json(record, "tune")).seconds


def tuning_parallel(quick: bool) -> Comparison:
    folder = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    rounds = 1 if quick else 3
    one: list[float] = []
    two: list[float] = []
    for round_number in range(rounds):
        # The order alternates: neither arm always runs on a warmer machine.
        for parallel in (1, 2) if round_number % 2 == 0 else (2, 1):
            (one if parallel == 1 else two).append(_search_seconds(parallel, quick, folder))
    comparison = Comparison(
        name="tuning_parallel",
        a_label="tune.parallel: 1 (one trial at a time)",
        b_label="tune.parallel: 2 (Dask LocalCluster, two trials at once)",
        unit="s (search wall time)",
        a_samples=one,
        b_samples=two,
        target="≤ 0.6× the search's wall time with parallel: 2 on 2 cores",
        met=None,
        extra={"trials": 2 if quick else 6, "model": "digits CNN, 8 epochs"},
    )
    comparison.met = comparison.ratio <= 0.6
    save(comparison, quick)
    return comparison
