"""The monitor's report (`mlaas.stages.monitor_report`): a page that stands alone, marks drift
in words, escapes names, survives an empty window, and stays small with many features."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from mlaas.core.confidence import Interval
from mlaas.core.drift import DatasetDrift, FeatureDrift, FeatureKind, LiveQuality
from mlaas.core.monitoring import Flagged, MonitorCheck, Retraining, Window
from mlaas.stages.monitor_report import (
    FEATURE_LIMIT,
    SUMMARY_FEATURES,
    drift_table,
    render_report,
    summary_markdown,
)

IMAGE = '<img src="data:image/png;base64,'
NOTE = "not enough data: the current has 4 usable values, fewer than 30"


def _feature(
    name: str, kind: FeatureKind = "number", score: float | None = 0.5, drifted: bool = False
) -> FeatureDrift:
    method = "ks" if kind == "number" else "chi2"
    return FeatureDrift(
        feature=name,
        kind=kind,
        method=method,
        score=score,
        threshold=0.05,
        drifted=drifted,
        judged=score is not None,
        reference_rows=200,
        current_rows=4 if score is None else 100,
        note=NOTE if score is None else None,
    )


def _check(
    features: list[FeatureDrift], records: int = 100, checked_at: float = 1_700_000_000.0
) -> MonitorCheck:
    judged = [f for f in features if f.judged]
    share = sum(f.drifted for f in judged) / len(judged) if judged else None
    return MonitorCheck(
        pipeline="churn",
        model_version=3,
        model_tag="champion",
        checked_at=checked_at,
        window=Window(records=records, first=checked_at - 3600, last=checked_at)
        if records
        else Window(records=0, first=None, last=None),
        data=DatasetDrift(
            features=tuple(features),
            share=share,
            threshold=0.5,
            drifted=share is not None and share >= 0.5,
        ),
        prediction=FeatureDrift(
            feature="prediction",
            kind="category",
            method="chi2",
            score=0.4,
            threshold=0.05,
            drifted=False,
            judged=True,
            reference_rows=200,
            current_rows=records,
        ),
        quality=LiveQuality(
            metric="accuracy",
            higher_is_better=True,
            value=0.81,
            interval=Interval(0.74, 0.87),
            count=120,
        ),
        champion_metric=0.93,
        quality_fell=True,
        flagged=Flagged(out_of_contract=2, out_of_distribution=5),
        drifted=True,
        retraining=Retraining(
            wanted=True,
            reason="live accuracy fell below the champion's",
            started="started",
            run_id="run-42",
        ),
    )


THREE = [
    _feature("age", score=1e-6, drifted=True),
    _feature("colour", kind="category", score=0.6),
    _feature("income", score=None),
]
GENERATOR = np.random.default_rng(0)
REFERENCE = {
    "age": list(GENERATOR.normal(40, 10, 200)),
    "colour": list(GENERATOR.choice(["red", "green", "$blue$"], 200)),
    "income": [*GENERATOR.normal(5, 1, 199), None],
}
CURRENT = {
    "age": list(GENERATOR.normal(60, 10, 100)),
    "colour": [*GENERATOR.choice(["red", "green"], 99), None],
    "income": [1.0, 2.0, 3.0, 4.0],
}
KINDS = {"age": "number", "colour": "category", "income": "number"}


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(_check(THREE), REFERENCE, CURRENT, KINDS, history=[])


def _row(page: str, feature: str) -> str:
    match = re.search(rf'<tr class="([^"]*)"><td>{re.escape(feature)}</td>.*?</tr>', page)
    assert match is not None, feature
    return match.group(0)


def test_the_page_names_every_feature_and_marks_the_drifted_one_in_words(page: str) -> None:
    drifted = _row(page, "age")
    assert 'class="drifted"' in drifted and "DRIFTED" in drifted
    assert "no drift" in _row(page, "colour") and "DRIFTED" not in _row(page, "colour")
    assert f"not judged: {NOTE}" in _row(page, "income")


def test_the_title_names_the_pipeline_version_and_time(page: str) -> None:
    title = re.search(r"<title>(.*)</title>", page)
    assert title is not None
    assert "churn" in title.group(1) and "version 3" in title.group(1)
    assert "2023-11-14 22:13:20 UTC" in title.group(1)


def test_the_verdict_says_what_retraining_did_and_why(page: str) -> None:
    assert (
        "Retraining started (flow run run-42): live accuracy fell below the champion&#x27;s" in page
    )
    assert "Live quality fell: accuracy 0.81" in page
    assert "The inputs drifted: 1 of 2 judged features (50%; the threshold is 50%)" in page


def test_live_quality_shows_the_interval_count_and_champion(page: str) -> None:
    assert "<td>0.74 to 0.87</td><td>120</td><td>0.93</td>" in page


def test_each_plotted_feature_has_an_embedded_png(page: str) -> None:
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # age, colour and income have columns; "prediction" has none; one check: no history.
    assert len(images) == 3
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)


def test_the_page_loads_nothing_from_elsewhere(page: str) -> None:
    assert "<script" not in page and "<link" not in page and "http" not in page
    assert all(source.startswith("data:") for source in re.findall(r'src="([^"]*)"', page))


def test_names_are_escaped() -> None:
    name = "<script>x</script>"
    check = _check([_feature(name, score=1e-4, drifted=True)])
    page = render_report(check, {name: [1.0] * 40}, {name: [2.0] * 40}, {name: "number"}, [])
    assert "<script" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_an_empty_window_still_renders_and_says_so() -> None:
    check = _check([_feature("age", score=None), _feature("colour", "category", None)], records=0)

    page = render_report(check, REFERENCE, {}, KINDS, history=[])

    assert "No records in the window" in page
    assert "age" in page and "colour" in page
    assert IMAGE not in page


def test_a_feature_missing_from_the_current_columns_is_said_and_drawn_alone() -> None:
    check = _check(THREE)
    current = {name: values for name, values in CURRENT.items() if name != "income"}

    page = render_report(check, REFERENCE, current, KINDS, history=[])

    assert "not in the current window&#x27;s columns" in _row(page, "income")
    assert "not in the current window" not in _row(page, "age")
    assert "not in the current window" not in _row(page, "prediction")
    assert page.count(IMAGE) == 3


def test_many_features_are_cut_at_the_limit_most_drifted_kept() -> None:
    calm = [_feature(f"calm_{index:02d}", score=0.5) for index in range(FEATURE_LIMIT + 4)]
    check = _check([*calm, _feature("shifted", score=1e-9, drifted=True)])

    page = render_report(check, {}, {}, {}, history=[])

    total = FEATURE_LIMIT + 5
    assert f"Showing the {FEATURE_LIMIT} most drifted of {total} features" in page
    assert "<td>shifted</td>" in page
    shown = [f for f in (f.feature for f in check.data.features) if f"<td>{f}</td>" in page]
    assert len(shown) == FEATURE_LIMIT


def test_a_short_feature_list_is_not_said_to_be_cut(page: str) -> None:
    assert "most drifted of" not in page


def test_history_is_plotted_from_two_checks() -> None:
    earlier = _check(THREE, checked_at=1_699_990_000.0)
    check = _check(THREE)

    with_history = render_report(check, {}, {}, {}, history=[earlier, check])
    alone = render_report(check, {}, {}, {}, history=[check])

    assert with_history.count(IMAGE) == 1
    assert alone.count(IMAGE) == 0 and "Fewer than 2 checks" in alone


def test_summary_has_the_verdict_the_table_and_the_link() -> None:
    features = [_feature(f"f{index:02d}", score=0.5) for index in range(SUMMARY_FEATURES + 2)]
    features.append(_feature("a|b", score=1e-5, drifted=True))

    summary = summary_markdown(_check(features), "/runs/report 1.html")

    assert "Drifted: yes." in summary
    assert (
        "Retraining started (flow run run-42): live accuracy fell below the champion's" in summary
    )
    assert "| feature | kind | method | score | threshold | verdict |" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + SUMMARY_FEATURES
    assert rows[1].startswith("| a\\|b |") and "DRIFTED" in rows[1]
    assert "(/runs/report%201.html)" in summary


def test_summary_without_a_link_links_nothing() -> None:
    assert "Report:" not in summary_markdown(_check(THREE), None)


def test_summary_of_an_empty_window_says_so() -> None:
    assert "No records in the window." in summary_markdown(_check([], records=0), None)


def test_drift_table_has_a_row_per_feature_and_one_for_the_predictions() -> None:
    rows = drift_table(_check(THREE))

    assert len(rows) == len(THREE) + 1
    assert [row["feature"] for row in rows] == ["age", "colour", "income", "prediction"]
    assert rows[-1]["of"] == "prediction" and rows[0]["drifted"] is True
    assert rows[2]["score"] is None and rows[2]["note"] == NOTE
