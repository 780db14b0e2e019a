"""The monitor report's plots: reference against current for one feature, and the history of
checks, each a base64 PNG for the self-contained page (`monitor_report`)."""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from mlaas.core.drift import LiveQuality
from mlaas.core.monitoring import MonitorCheck
from mlaas.stages.evaluate_plots import pyplot

CATEGORY_LIMIT = 20
_FIGSIZE = (4.0, 2.5)
_DPI = 80
_MAX_BINS = 30
_LABEL_CHARS = 30


def histogram(reference: np.ndarray, current: np.ndarray) -> str | None:
    """Both sides' densities over the same bins."""
    both = np.concatenate([reference, current])
    if not both.size:
        return None
    bins = min(_MAX_BINS, max(5, int(math.sqrt(both.size))))
    edges = np.histogram_bin_edges(both, bins=bins)
    figure, axes = pyplot().subplots(figsize=_FIGSIZE)
    # Filled against outlined, so the sides differ without colour.
    if reference.size:
        axes.hist(
            reference,
            bins=edges,
            density=True,
            color="grey",
            alpha=0.5,
            label=f"reference ({reference.size})",
        )
    if current.size:
        axes.hist(
            current,
            bins=edges,
            density=True,
            histtype="step",
            color="tab:red",
            linewidth=1.5,
            label=f"current ({current.size})",
        )
    axes.set_ylabel("density")
    axes.legend(fontsize=7)
    return png(figure)


def shares(reference: Sequence[Any], current: Sequence[Any]) -> str | None:
    """Each side's share of the most common categories, side by side."""
    if not reference and not current:
        return None
    counts = [Counter(str(v) for v in values) for values in (reference, current)]
    totals = [max(1, len(values)) for values in (reference, current)]
    shares = [
        {c: n / total for c, n in side.items()} for side, total in zip(counts, totals, strict=True)
    ]
    ranked = sorted(
        set(counts[0]) | set(counts[1]),
        key=lambda c: (-max(shares[0].get(c, 0.0), shares[1].get(c, 0.0)), c),
    )
    top, rest = ranked[:CATEGORY_LIMIT], ranked[CATEGORY_LIMIT:]
    labels = [plain(c) for c in top]
    bars = [[side.get(c, 0.0) for c in top] for side in shares]
    if rest:
        labels.append(f"other ({len(rest)})")
        for side, values in zip(shares, bars, strict=True):
            values.append(sum(side.get(c, 0.0) for c in rest))
    height = max(_FIGSIZE[1], 0.22 * len(labels) + 1)
    figure, axes = pyplot().subplots(figsize=(_FIGSIZE[0], height))
    positions = np.arange(len(labels))
    axes.barh(positions - 0.2, bars[0], height=0.4, color="grey", label="reference")
    axes.barh(positions + 0.2, bars[1], height=0.4, color="tab:red", hatch="//", label="current")
    axes.set_yticks(positions, labels, fontsize=7)
    axes.invert_yaxis()  # the largest on top
    axes.set_xlabel("share")
    axes.legend(fontsize=7)
    return png(figure)


def history_plot(points: Sequence[MonitorCheck]) -> str:
    """The drifted share of features and the live metric per check."""
    plt = pyplot()
    times = [datetime.fromtimestamp(c.checked_at, UTC) for c in points]
    figure, (drift, quality) = plt.subplots(1, 2, figsize=(2 * _FIGSIZE[0], _FIGSIZE[1]))
    shares = [math.nan if c.data.share is None else c.data.share for c in points]
    drift.plot(times, shares, marker="o", label="drifted share")
    drift.axhline(points[-1].data.threshold, color="grey", linestyle="--", label="threshold")
    drift.set_ylim(0, 1.05)
    drift.set_title("drifted share of features", fontsize=9)
    drift.legend(fontsize=7)
    values = [_value(c.quality) for c in points]
    if any(not math.isnan(v) for v in values):
        low = [
            v - c.quality.interval.low if c.quality and c.quality.interval else 0.0
            for v, c in zip(values, points, strict=True)
        ]
        high = [
            c.quality.interval.high - v if c.quality and c.quality.interval else 0.0
            for v, c in zip(values, points, strict=True)
        ]
        quality.errorbar(times, values, yerr=[low, high], marker="o", capsize=2, label="live")
        champion = points[-1].champion_metric
        if champion is not None:
            quality.axhline(champion, color="grey", linestyle="--", label="champion's test")
        quality.legend(fontsize=7)
        metric = next(c.quality.metric for c in points if c.quality)
        quality.set_title(plain(f"live {metric}"), fontsize=9)
    else:
        quality.text(
            0.5, 0.5, "no live metric", ha="center", va="center", transform=quality.transAxes
        )
    for axes in (drift, quality):
        axes.tick_params(labelsize=7)
    figure.autofmt_xdate()
    return png(figure)


def _value(quality: LiveQuality | None) -> float:
    return math.nan if quality is None or quality.value is None else quality.value


def png(figure: Any) -> str:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plain(text: str) -> str:
    """Text matplotlib draws as it is: `$…$` would be parsed as mathematics, and a long
    category name would squeeze its plot."""
    short = text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"
    return short.replace("$", r"\$")
