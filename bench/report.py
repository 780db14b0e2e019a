"""BENCHMARKS.md from the saved results: one table per benchmark, with its machine and command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Comparison

INTRO = """# Benchmarks

Every figure is a ratio of two things measured side by side in one run (A and B interleaved,
the warm-up round dropped, medians of the rounds), unless it says otherwise. Timings on these
shared 2-core machines are noisy: read ratios, not absolute times. Regenerate with `make bench`
(about 15 minutes); `make bench-quick` is the smoke test CI runs (tiny sizes, no report).
"""


def line(comparison: Comparison) -> str:
    verdict = {True: "met", False: "MISSED", None: "n/a"}[comparison.met]
    return (
        f"{comparison.name:28} A {comparison.a_median:.4g} {comparison.unit} | "
        f"B {comparison.b_median:.4g} | B/A {comparison.ratio:.3f} | {verdict}: {comparison.target}"
    )


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def write_markdown(path: Path) -> None:
    sections = [INTRO]
    for result_file in sorted(RESULTS_DIR.glob("*.json")):
        if result_file.stem.endswith("-quick"):
            continue
        result: dict[str, Any] = json.loads(result_file.read_text())
        verdict = {True: "**met**", False: "**missed**", None: "n/a on this machine"}[result["met"]]
        rows = [
            f"## {result['name']}",
            "",
            f"{result['date']} · {result['machine']} · `{result['command']}`",
            "",
            f"| | median ({result['unit']}) | samples |",
            "| --- | --- | --- |",
            f"| A: {result['a_label']} | {_fmt(result['a_median'])} | "
            + ", ".join(_fmt(v) for v in result["a_samples"])
            + " |",
            f"| B: {result['b_label']} | {_fmt(result['b_median'])} | "
            + ", ".join(_fmt(v) for v in result["b_samples"])
            + " |",
            "",
            f"B/A = **{result['ratio']:.3f}**. Target: {result['target']}: {verdict}.",
        ]
        extra = {k: v for k, v in result.get("extra", {}).items() if k != "errors"}
        if extra:
            rows += [
                "",
                "Also measured: "
                + ", ".join(f"{k} = {_fmt_any(v)}" for k, v in extra.items())
                + ".",
            ]
        if result.get("notes"):
            rows += ["", result["notes"]]
        sections.append("\n".join(rows))
    path.write_text("\n\n".join(sections) + "\n")


def _fmt_any(value: Any) -> str:
    return _fmt(value) if isinstance(value, float) else str(value)
