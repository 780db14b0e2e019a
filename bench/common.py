"""Side-by-side timing: A and B interleaved round by round, the warm-up round dropped, medians
and their ratio reported with the machine, the date and the command."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(os.environ.get("MLAAS_BENCH_RESULTS", ".mlaas/bench"))
# Results that are tables of several rows rather than an A/B comparison (the peers benchmark).
TABLES_DIR = RESULTS_DIR / "tables"


@dataclass
class Comparison:
    """One benchmark's outcome: what was compared, the medians, their ratio, the target."""

    name: str
    a_label: str
    b_label: str
    unit: str
    a_samples: list[float]
    b_samples: list[float]
    target: str
    met: bool | None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def a_median(self) -> float:
        return statistics.median(self.a_samples)

    @property
    def b_median(self) -> float:
        return statistics.median(self.b_samples)

    @property
    def ratio(self) -> float:
        return self.b_median / self.a_median if self.a_median else float("nan")


def interleaved(
    a: Callable[[], float], b: Callable[[], float], rounds: int, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Run a then b, `rounds` times after `warmup` dropped rounds; each returns its measure."""
    a_samples: list[float] = []
    b_samples: list[float] = []
    for round_index in range(warmup + rounds):
        first, second = a(), b()
        if round_index >= warmup:
            a_samples.append(first)
            b_samples.append(second)
    return a_samples, b_samples


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def machine() -> str:
    """The processor (or GPU) the numbers come from."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def save(comparison: Comparison, quick: bool) -> Path:
    """Write the comparison as JSON for the report (one file per benchmark and mode)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{comparison.name}{'-quick' if quick else ''}.json"
    record = asdict(comparison) | {
        "a_median": comparison.a_median,
        "b_median": comparison.b_median,
        "ratio": comparison.ratio,
        "machine": machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "command": " ".join(["python", "-m", "bench", *sys.argv[1:]]),
        "quick": quick,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
