"""The monitor's decisions on records it is handed: which answers it judges, what it flags, when
it retrains and on what (issue 12). The loop itself, on real processes, is in
tests/e2e/test_platform.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlaas.core.model_settings import GradientBoostingSettings
from mlaas.core.monitoring import Flagged, MonitorCheck, Retraining, Window
from mlaas.core.reference import with_predictions
from mlaas.core.settings import LoadSettings, MonitorSettings, ServeSettings, TrainSettings
from mlaas.core.tasks import task_of
from mlaas.families.tabular import TabularFamily
from mlaas.modeling.bundle import ServingInfo
from mlaas.modeling.fitting import fit_model
from mlaas.modeling.reference import build_reference
from mlaas.serving.observation import observe, watch_of
from mlaas.stages import monitor
from mlaas.stages.validate import widened
from mlaas.stores.prediction_log import FeedbackRecord, PredictionRecord
from mlaas.stores.workspace import Workspace

family = TabularFamily()
MODELS: dict[str, Any] = {}


def _rows(count: int, shifted: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(0, 1, count), rng.normal(3 if shifted else 0, 1, count)
    yes = x1 > 0 if shifted else x1 + x2 > 0
    return pd.DataFrame({"x1": x1, "x2": x2, "label": np.where(yes, "yes", "no")})


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> monitor.Champion:
    folder = tmp_path_factory.mktemp("loop")
    path = folder / "loop.csv"
    _rows(600, shifted=False, seed=0).to_csv(path, index=False)
    load = LoadSettings(source=None, path=path, target="label")
    table = family.load(load)
    card = family.model_card(table, load, GradientBoostingSettings())
    cfg = TrainSettings(model=GradientBoostingSettings(), accelerator="cpu")
    train, test = table.slice(0, 500), table.slice(500)
    model, _ = fit_model(family, card, train, test, cfg, folder / "checkpoints")
    info = ServingInfo(
        name="loop",
        version=1,
        alias="champion",
        model_sha256="0" * 64,
        serve=ServeSettings(),
        metrics={"test_accuracy": 0.97},
        tags={},
    )
    reference = build_reference(family, model, train, test, seed=0)
    MODELS["loop:v1"] = model  # what the tests' answers come from
    return monitor.Champion("loop:v1", info, card, reference)


def _answered(
    champion: monitor.Champion, frame: pd.DataFrame, start: float, version: int = 1
) -> tuple[list[PredictionRecord], dict[tuple[str, int], FeedbackRecord]]:
    """Records as a server writes them for `frame`'s rows, and feedback with their labels."""
    model, card = MODELS[champion.tag], champion.card
    rows = frame.drop(columns="label").to_dict(orient="records")
    features = family.instances_to_features(rows, card)
    predictions = task_of(card).describe(model.predict(features), card)
    described = family.describe_inputs(features, card, champion.reference.learned)
    watch = watch_of(champion.reference, ServeSettings())
    observed = observe(with_predictions(described, predictions, card.task), predictions, watch)
    records, feedback = [], {}
    for index, (item, label) in enumerate(zip(observed, frame["label"], strict=True)):
        request = f"r{start:.0f}-{index}"
        records.append(
            PredictionRecord(
                request_id=request,
                time=start + index,
                model_version=version,
                model_tag=f"loop:v{version}",
                latency_ms=1.0,
                prediction=item.prediction,
                features=item.features,
                warnings=item.warnings,
            )
        )
        feedback[(request, 0)] = FeedbackRecord(request_id=request, label=label, time=start)
    return records, feedback


def test_production_like_training_is_rarely_flagged(champion: monitor.Champion) -> None:
    # Each feature's test errs in 5% of calm windows, and with two features one drifted feature
    # is half of them: about one calm window in ten drifts (Evidently's rule). Never most.
    drifted, fell, far = 0, 0, 0
    for seed in range(20):
        records, feedback = _answered(champion, _rows(300, shifted=False, seed=seed), 1000)
        found = monitor.compare(champion, records, records, feedback, MonitorSettings())
        assert found.quality is not None and found.quality.count == 300
        drifted += found.data.drifted
        fell += found.fell
        far += found.flagged.out_of_distribution
    assert drifted <= 5 and fell == 0
    # Out of distribution: about serve.ood_flag_share (1%) of answers like the training data.
    assert 0.002 < far / 6000 < 0.03


def test_a_shifted_feature_and_falling_quality_are_flagged(champion: monitor.Champion) -> None:
    records, feedback = _answered(champion, _rows(300, shifted=True, seed=2), 1000)
    found = monitor.compare(champion, records, records, feedback, MonitorSettings())
    drifted = {f.feature for f in found.data.features if f.drifted}
    assert found.data.drifted and "x2" in drifted and "x1" not in drifted
    assert found.fell and found.quality is not None and found.quality.value < 0.8
    assert found.flagged.out_of_contract > 0  # x2 beyond its training range, named


def test_the_window_is_the_champions_answers_since_the_last_check(
    champion: monitor.Champion,
) -> None:
    old, _ = _answered(champion, _rows(50, False, 3), 0, version=1)
    new, _ = _answered(champion, _rows(150, False, 4), 100, version=1)
    other, _ = _answered(champion, _rows(20, False, 5), 300, version=2)
    records = [*old, *new, *other]
    window = monitor.window_of(records, version=1, since=old[-1].time, at_least=100)
    assert window == new  # the new ones are enough
    short = monitor.window_of(records, version=1, since=new[-60].time, at_least=100)
    assert short == (old + new)[-100:]  # too few new: the last 100 of the champion's
    assert all(r.model_version == 2 for r in monitor.window_of(records, 2, None, 100))


def test_labelled_answers_become_rows_of_the_training_table(champion: monitor.Champion) -> None:
    frame = _rows(30, shifted=True, seed=6)
    records, feedback = _answered(champion, frame, 0)
    del feedback[(records[0].request_id, 0)]  # an answer nobody labelled is left out
    rows, unusable = monitor.labelled_rows(records, feedback, champion.card, limit=1000)
    assert rows is not None and unusable == 0
    assert rows.column_names == ["x1", "x2", "label"] and rows.num_rows == 29
    assert rows.column("label").to_pylist() == frame["label"].tolist()[1:]
    newest, _ = monitor.labelled_rows(records, feedback, champion.card, limit=5)
    assert newest is not None and newest.column("x1").to_pylist() == frame["x1"].tolist()[-5:]


def _check(started: str, at: float) -> MonitorCheck:
    from mlaas.core.drift import DatasetDrift, FeatureDrift

    nothing = FeatureDrift(
        feature="prediction", kind="category", method="chi2", score=None, threshold=0.05,
        drifted=False, judged=False, reference_rows=0, current_rows=0,
    )  # fmt: skip
    return MonitorCheck(
        pipeline="loop",
        model_version=1,
        model_tag="loop:v1",
        checked_at=at,
        window=Window(records=0, first=None, last=None),
        data=DatasetDrift(features=(), share=None, threshold=0.5, drifted=True),
        prediction=nothing,
        quality=None,
        champion_metric=None,
        quality_fell=False,
        flagged=Flagged(out_of_contract=0, out_of_distribution=0),
        drifted=True,
        retraining=Retraining(wanted=True, reason="x", started=started, run_id="earlier"),  # type: ignore[arg-type]
    )


def _decide(champion: monitor.Champion, tmp_path: Path, **kwargs: Any) -> Retraining:
    records, feedback = _answered(champion, _rows(40, shifted=True, seed=7), 0)
    arguments: dict[str, Any] = {
        "cfg": MonitorSettings(retrain_cooldown_seconds=600),
        "past": [],
        "now": 10_000.0,
        "drifted": True,
        "fell": False,
        "start_retraining": lambda overrides, reason: "run-1",
        **kwargs,
    }
    return monitor._retrain(Workspace(tmp_path), "loop", champion, records, feedback, **arguments)


def test_a_drift_starts_one_retraining_on_the_data_plus_feedback(
    champion: monitor.Champion, tmp_path: Path
) -> None:
    asked: list[tuple[dict[str, Any], str]] = []
    decided = _decide(
        champion, tmp_path, start_retraining=lambda o, r: asked.append((o, r)) or "run-1"
    )
    assert decided.started == "started" and decided.run_id == "run-1"
    assert decided.feedback_rows == 40
    ((overrides, reason),) = asked
    assert reason == "monitor: the data drifted"
    saved = Path(overrides["load"]["extra_rows"])
    assert saved.name.startswith("feedback-rows-") and pd.read_parquet(saved).shape == (40, 3)


def test_no_second_retraining_within_the_cooldown(
    champion: monitor.Champion, tmp_path: Path
) -> None:
    recent = _decide(champion, tmp_path, past=[_check("started", 9_500.0)])
    assert recent.started == "cooling_down" and recent.run_id == "earlier"
    later = _decide(champion, tmp_path, past=[_check("started", 9_000.0)])
    assert later.started == "started"


def test_a_retraining_that_cannot_start_is_recorded_and_nothing_else(
    champion: monitor.Champion, tmp_path: Path
) -> None:
    def refuse(overrides: dict[str, Any], reason: str) -> str:
        raise RuntimeError("no deployment named loop")

    failed = _decide(champion, tmp_path, start_retraining=refuse)
    assert failed.started == "failed" and "no deployment named loop" in failed.reason
    quiet = _decide(champion, tmp_path, drifted=False)
    assert quiet.started == "not_wanted" and not quiet.wanted
    off = _decide(champion, tmp_path, cfg=MonitorSettings(retrain=False))
    assert off.wanted and off.started == "not_wanted" and "monitor.retrain" in off.reason


def test_the_gate_widens_to_take_labelled_production_rows() -> None:
    reference = {
        "columns": {
            "x2": {"kind": "number", "min": -3.0, "max": 3.0},
            "island": {"kind": "category", "values": ["Biscoe", "Dream"]},
        },
        "classes": ["no", "yes"],
    }
    extra = {
        "columns": {
            "x2": {"kind": "number", "min": 0.5, "max": 6.0},
            "island": {"kind": "category", "values": ["Dream", "Torgersen"]},
            "new": {"kind": "number", "min": 0, "max": 1},
        },
        "classes": ["yes"],
    }
    merged = widened(reference, extra)
    assert merged["columns"]["x2"] == {"kind": "number", "min": -3.0, "max": 6.0}
    assert merged["columns"]["island"]["values"] == ["Biscoe", "Dream", "Torgersen"]
    assert "new" not in merged["columns"] and merged["classes"] == ["no", "yes"]


def test_a_retraining_that_ended_badly_is_told_at_the_next_check() -> None:
    past = [_check("started", 100.0)]
    failed = monitor.failed_retraining(past, lambda run: ("FAILED", "validation gate failed"))
    assert failed is not None and "run earlier" in failed and "validation gate failed" in failed
    assert monitor.failed_retraining(past, lambda run: ("COMPLETED", None)) is None
    assert (
        monitor.failed_retraining([_check("cooling_down", 1.0)], lambda run: ("FAILED", "")) is None
    )
