"""What one monitor check shows people: a self-contained HTML page, a Prefect markdown summary and
a Prefect table of every feature's drift.

Pure: a `MonitorCheck` and the columns it compared in, text out. The page loads nothing (no
script, font or stylesheet from elsewhere): the machines have no internet, and it is opened from
MLflow's artifact view or as a file. Its plots are PNGs embedded as base64.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np

from mlaas.core.drift import FeatureDrift, LiveQuality
from mlaas.core.monitoring import MonitorCheck
from mlaas.stages.monitor_plots import histogram, history_plot, shares

FEATURE_LIMIT = 40
"""Features on the page, most drifted first: each brings a plot, and 500 of them would make a
page of tens of megabytes. The rest are in `drift.json` and the Prefect table."""
SUMMARY_FEATURES = 10
"""Categories per bar chart, by their larger share; the rest are summed in one bar."""
NO_RECORDS = "No records in the window"

_P_VALUES = ("ks", "chi2")  # a lower score is further from the reference; for the rest, higher
_METHODS = {
    "ks": "KS p-value",
    "chi2": "chi² p-value",
    "wasserstein": "Wasserstein (σ)",
    "jensenshannon": "Jensen–Shannon",
    "domain_classifier": "classifier AUC",
}
_RETRAINING = {
    "started": "Retraining started",
    "cooling_down": "Retraining wanted but not started (cooling down)",
    "not_wanted": "Retraining not wanted",
    "failed": "Retraining wanted but failed to start",
}
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }
th { background: #f0f0f0; }
tr.drifted { background: #fbd5d2; }
tr.drifted td:nth-child(6) { font-weight: bold; }  /* the verdict */
tr.unjudged { color: #666; font-style: italic; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; max-width: 320px; }
"""
Columns = Mapping[str, Sequence[Any]]


def render_report(
    check: MonitorCheck,
    reference: Columns,
    current: Columns,
    kinds: Mapping[str, str],
    history: Sequence[MonitorCheck],
    *,
    limit: int = FEATURE_LIMIT,
) -> str:
    """The check as one HTML page; `history` holds the pipeline's earlier checks (this one is
    added when it is not among them)."""
    features = most_drifted(check.data.features)
    shown = features[:limit]
    title = (
        f"Monitor: {check.pipeline}, version {check.model_version} ({check.model_tag}), "
        f"{_time(check.checked_at)}"
    )
    cut = (
        f"<p>Showing the {len(shown)} most drifted of {len(features)} features; the others "
        "are in drift.json and the flow run's drift table.</p>"
        if len(shown) < len(features)
        else ""
    )
    # A window without records holds no columns: that is said once, not per feature.
    empty = check.window.records == 0
    absent = set() if empty else {f.feature for f in shown if f.feature not in current}
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Verdict</h2>",
        _bullets(verdict_lines(check)),
        "<h2>Counts</h2>",
        _bullets(_counts(check)),
        "<h2>Feature drift</h2>",
        cut,
        _drift_table_html(shown, absent),
        "<h2>Prediction drift</h2>",
        _drift_table_html([check.prediction]),
        "<h2>Live quality</h2>",
        _quality_html(check.quality, check.champion_metric),
        "<h2>Reference against current</h2>",
        f"<p>{NO_RECORDS}: nothing to plot against the reference.</p>"
        if empty
        else "\n".join(
            _feature_figure(f, reference, current, kinds) for f in [*shown, check.prediction]
        ),
        "<h2>History</h2>",
        _history_html(check, history),
        "</body>\n</html>\n",
    ]
    return "\n".join(part for part in parts if part)


def summary_markdown(check: MonitorCheck, report_link: str | None) -> str:
    """The verdict, the counts and the most drifted features, for a Prefect markdown artifact."""
    lines = [f"# Monitor: {_md(check.pipeline)}, version {check.model_version}", ""]
    lines += [f"- {_md(line)}" for line in verdict_lines(check)]
    lines += ["", "## Counts", ""] + [f"- {_md(line)}" for line in _counts(check)]
    top = most_drifted(check.data.features)[:SUMMARY_FEATURES]
    if top:
        lines += [
            "",
            f"## The {len(top)} most drifted features",
            "",
            "| feature | kind | method | score | threshold | verdict |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {_md(f.feature)} | {f.kind} | {_METHODS[f.method]} | {_score(f)} | "
            f"{_threshold(f)} | {_verdict_word(f)} |"
            for f in top
        ]
    if report_link is not None:
        # Percent-encoded so a path with spaces or brackets stays one link.
        target = report_link.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
        lines += ["", f"Report: [{_md(report_link)}]({target})"]
    return "\n".join(lines) + "\n"


def drift_table(check: MonitorCheck) -> list[dict[str, object]]:
    """One row per feature, most drifted first, then the predictions' row: a Prefect table."""
    return [
        {
            "of": of,
            "feature": f.feature,
            "kind": f.kind,
            "method": f.method,
            "score": f.score,
            "threshold": f.threshold,
            "drifted": f.drifted,
            "judged": f.judged,
            "reference_rows": f.reference_rows,
            "current_rows": f.current_rows,
            "note": f.note,
        }
        for of, f in [
            *(("input", f) for f in most_drifted(check.data.features)),
            ("prediction", check.prediction),
        ]
    ]


def most_drifted(features: Iterable[FeatureDrift]) -> list[FeatureDrift]:
    """Drifted first, then judged, each by how far past its threshold; unjudged ones last."""
    return sorted(features, key=lambda f: (not f.drifted, not f.judged, -_severity(f), f.feature))


def verdict_lines(check: MonitorCheck) -> list[str]:
    """The check's findings and decision, as sentences."""
    lines = [f"{NO_RECORDS}."] if check.window.records == 0 else []
    lines.append(f"Drifted: {'yes' if check.drifted else 'no'}.")
    data = check.data
    judged = [f for f in data.features if f.judged]
    if data.share is None:
        lines.append(
            f"The inputs were not judged: none of {len(data.features)} features had enough values."
        )
    else:
        lines.append(
            f"The inputs {'drifted' if data.drifted else 'did not drift'}: "
            f"{sum(f.drifted for f in judged)} of {len(judged)} judged features "
            f"({data.share:.0%}; the threshold is {data.threshold:.0%})."
        )
    prediction = check.prediction
    if not prediction.judged:
        lines.append(f"The predictions were not judged: {prediction.note or 'no reason given'}.")
    else:
        lines.append(
            f"The predictions {'drifted' if prediction.drifted else 'did not drift'} "
            f"({_METHODS[prediction.method]} {_score(prediction)}, "
            f"drift when {_threshold(prediction)})."
        )
    lines.append(_quality_line(check.quality, check.champion_metric, check.quality_fell))
    retraining = check.retraining
    started = _RETRAINING[retraining.started]
    if retraining.run_id:
        started += f" (flow run {retraining.run_id})"
    if retraining.feedback_rows:
        started += f", with {retraining.feedback_rows} labelled production records added"
    lines.append(f"{started}: {retraining.reason}")
    return lines


def _counts(check: MonitorCheck) -> list[str]:
    window = check.window
    span = (
        f" ({_time(window.first)} to {_time(window.last)})"
        if window.first is not None and window.last is not None
        else ""
    )
    features = check.data.features
    return [
        f"Records in the window: {window.records}{span}.",
        f"Features: {len(features)}, judged {sum(f.judged for f in features)}, "
        f"drifted {sum(f.drifted for f in features)}.",
        f"Flagged records: {check.flagged.out_of_contract} out of contract, "
        f"{check.flagged.out_of_distribution} out of distribution.",
    ]


def _quality_line(quality: LiveQuality | None, champion: float | None, fell: bool) -> str:
    if quality is None:
        return "Live quality: this model's task has no live metric."
    if quality.value is None:
        return f"Live quality: no feedback yet, so no live {quality.metric}."
    against = f" against the champion's test {champion:.4g}" if champion is not None else ""
    return (
        f"Live quality {'fell' if fell else 'did not fall'}: {quality.metric} "
        f"{_quality_figure(quality)}{against}."
    )


def _quality_figure(quality: LiveQuality) -> str:
    interval = quality.interval
    spread = f", 95% interval {interval.low:.4g} to {interval.high:.4g}" if interval else ""
    return f"{quality.value:.4g} ({quality.count} answers with feedback{spread})"


def _quality_html(quality: LiveQuality | None, champion: float | None) -> str:
    if quality is None:
        return "<p>This model's task has no live metric.</p>"
    interval = quality.interval
    cells = [
        quality.metric
        + (" (higher is better)" if quality.higher_is_better else " (lower is better)"),
        "no feedback yet" if quality.value is None else f"{quality.value:.4g}",
        f"{interval.low:.4g} to {interval.high:.4g}" if interval else "",
        str(quality.count),
        "" if champion is None else f"{champion:.4g}",
    ]
    header = ("metric", "value", "95% interval", "answers with feedback", "champion's test")
    return _table(header, [("", cells)])


def _drift_table_html(features: Sequence[FeatureDrift], absent: Collection[str] = ()) -> str:
    """The features' rows; `absent` names those missing from the current window's columns."""
    rows = []
    for f in features:
        notes = [f"{name} {value:.4g}" for name, value in f.detail.items()]
        if f.judged and f.note:
            notes.append(f.note)
        if f.feature in absent:
            notes.append("not in the current window's columns")
        style = "drifted" if f.drifted else "" if f.judged else "unjudged"
        cells = [
            f.feature,
            f.kind,
            _METHODS[f.method],
            _score(f),
            _threshold(f),
            _verdict_word(f),
            f"{f.reference_rows} / {f.current_rows}",
            "; ".join(notes),
        ]
        rows.append((style, cells))
    header = (
        "feature",
        "kind",
        "method",
        "score",
        "threshold",
        "verdict",
        "rows ref / current",
        "note",
    )
    return _table(header, rows)


def _bullets(lines: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """An HTML table of escaped cells; each row comes with its class."""
    head = "".join(f"<th>{escape(name)}</th>" for name in header)
    body = "".join(
        f'<tr class="{style}">' + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>\n"
        for style, cells in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _feature_figure(
    feature: FeatureDrift, reference: Columns, current: Columns, kinds: Mapping[str, str]
) -> str:
    name = feature.feature
    kind = kinds.get(name, feature.kind)
    caption = f"{name} ({_verdict_word(feature)})"
    if kind not in ("number", "category"):
        return _figure(None, f"{caption}: compared through the embeddings, not plotted")
    if name not in reference and name not in current:
        return ""  # in neither side's columns (the predictions, for most models): nothing to draw
    missing = [
        side
        for side, columns in (("reference", reference), ("current window", current))
        if name not in columns
    ]
    if missing:
        caption += f"; not in the {missing[0]}'s columns"
    ref, cur = reference.get(name, ()), current.get(name, ())
    if kind == "number":
        image = histogram(_finite(ref), _finite(cur))
    else:
        image = shares([v for v in ref if not _missing(v)], [v for v in cur if not _missing(v)])
    return _figure(image, caption)


def _figure(image: str | None, caption: str) -> str:
    img = f'<img src="data:image/png;base64,{image}" alt="{escape(caption)}">\n' if image else ""
    return f"<figure>\n{img}<figcaption>{escape(caption)}</figcaption>\n</figure>"


def _history_html(check: MonitorCheck, history: Sequence[MonitorCheck]) -> str:
    points = sorted(
        [*(c for c in history if c.checked_at != check.checked_at), check],
        key=lambda c: c.checked_at,
    )
    if len(points) < 2:
        return "<p>Fewer than 2 checks so far: no history to plot.</p>"
    return _figure(history_plot(points), f"the last {len(points)} checks")


def _severity(feature: FeatureDrift) -> float:
    """How far the score lies past (over 1) or short of its threshold, whichever way it points."""
    if feature.score is None:
        return -math.inf
    if feature.method in _P_VALUES:
        return feature.threshold / max(feature.score, 1e-300)
    return feature.score / feature.threshold


def _score(feature: FeatureDrift) -> str:
    return f"not judged: {feature.note}" if feature.score is None else f"{feature.score:.4g}"


def _threshold(feature: FeatureDrift) -> str:
    # The side of the threshold that means drift: a p-value below it, a distance above it.
    return f"{'<' if feature.method in _P_VALUES else '>'} {feature.threshold:.4g}"


def _verdict_word(feature: FeatureDrift) -> str:
    return "DRIFTED" if feature.drifted else "no drift" if feature.judged else "not judged"


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _md(text: str) -> str:
    """Text safe in a markdown table cell: no HTML, no column breaks."""
    return escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _finite(values: Sequence[Any]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()  # None becomes NaN
    return array[np.isfinite(array)]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # NaN != NaN
