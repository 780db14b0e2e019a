"""Stage `monitor`: is the served champion still seeing what it learned, and still right?

One check reads the pipeline's prediction log (what its model servers answered, and the
feedback clients sent on it) and compares the window of answers given by the champion with the
reference saved with it (`mlaas.core.reference`), by `mlaas.core.drift`'s statistics:

- each input feature (and, for texts and images, their embedding) against the training rows;
  the data set drifts when at least `monitor.drift.drifted_share` of them do;
- the answers against the test split's answers (prediction drift);
- the answers that got feedback: live accuracy or RMSE, with its interval, against the
  champion's test figure (`monitor.quality_tolerance`).

It writes `drift.json` (and a line of `history.jsonl`), an HTML report, and an MLflow run in the
`monitoring` experiment tagged with the model version. When the data drifted or the quality
fell, it asks for a retraining (`start_retraining`, which the flow makes a run of the
pipeline's deployment), on the original data plus the labelled production records
(`load.extra_rows`), unless one started within `monitor.retrain_cooldown_seconds`.

The window holds only the champion's own answers, since the last check (at least the last
`monitor.window_records` of them): answers of an earlier version were judged against that
version, and a retrained champion starts with a clean slate instead of re-flagging the drift
it was trained on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlaas.core.drift import (
    DatasetDrift,
    FeatureDrift,
    FeatureKind,
    LiveQuality,
    dataset_drift,
    live_accuracy,
    live_rmse,
    prediction_drift,
    quality_fell,
)
from mlaas.core.errors import NotReady
from mlaas.core.model_card import ModelCard, read_card
from mlaas.core.monitoring import Flagged, MonitorCheck, Retraining, Window
from mlaas.core.records import Packaged
from mlaas.core.reference import (
    CONFIDENCE,
    OOD_SCORE,
    OOD_WARNING,
    PREDICTED,
    PREDICTED_VALUE,
    MonitorReference,
)
from mlaas.core.settings import MonitorSettings
from mlaas.core.tasks import task_of
from mlaas.families import get_family
from mlaas.modeling.bundle import MODEL_SUBDIR, ServingInfo, read_serving_info
from mlaas.modeling.reference import read_reference
from mlaas.stages.monitor_report import render_report
from mlaas.stores.bento_store import stored_model_folder
from mlaas.stores.files import write_json, write_whole
from mlaas.stores.prediction_log import (
    FeedbackRecord,
    PredictionRecord,
    read_feedback,
    read_predictions,
)
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace

EXPERIMENT = "monitoring"
EMBEDDING = "embedding"
ANSWER_COLUMNS = frozenset({PREDICTED, CONFIDENCE, PREDICTED_VALUE, OOD_SCORE})
"""Columns of a description that describe the answer, not the input (prediction drift's)."""

StartRetraining = Callable[[dict[str, Any], str], str]
"""(overrides, reason) -> the id of the training run it started."""


@dataclass(frozen=True)
class Champion:
    """The champion as its model servers serve it: the packaged model's own files."""

    tag: str
    info: ServingInfo
    card: ModelCard
    reference: MonitorReference


def served_champion(workspace: Workspace, name: str) -> Champion:
    """The model the pipeline's package record names, with its reference."""
    record = workspace.pipeline(name).package_result
    if not record.is_file():
        raise NotReady(f"pipeline {name!r} has no packaged champion yet: nothing is served")
    tag = Packaged.model_validate_json(record.read_text()).model_tag
    folder = stored_model_folder(workspace.bentoml_home, tag)
    reference = read_reference(folder / MODEL_SUBDIR)
    if reference is None:
        raise NotReady(
            f"{tag} was trained before models kept a monitoring reference: retrain it "
            f"(`mlaas train {name}`) to monitor it"
        )
    return Champion(tag, read_serving_info(folder), read_card(folder / MODEL_SUBDIR), reference)


def window_of(
    records: Sequence[PredictionRecord], version: int, since: float | None, at_least: int
) -> list[PredictionRecord]:
    """The champion's answers since `since`, or its last `at_least` when fewer are new."""
    mine = [record for record in records if record.model_version == version]
    new = [record for record in mine if since is None or record.time > since]
    return new if len(new) >= at_least else mine[-at_least:]


@dataclass(frozen=True)
class Comparison:
    data: DatasetDrift
    prediction: FeatureDrift
    quality: LiveQuality | None
    fell: bool
    champion_metric: float | None
    flagged: Flagged


def compare(
    champion: Champion,
    window: Sequence[PredictionRecord],
    answered: Sequence[PredictionRecord],
    feedback: Mapping[tuple[str, int], FeedbackRecord],
    cfg: MonitorSettings,
    seed: int = 0,
) -> Comparison:
    """The window against the champion's reference, and the champion's `answered` records that
    got feedback against their labels (feedback comes later than answers, so live quality looks
    past the window). Pure: records in, verdicts out."""
    reference, card = champion.reference, champion.card
    kinds: dict[str, FeatureKind] = {
        name: kind for name, kind in reference.kinds.items() if name not in ANSWER_COLUMNS
    }
    before: dict[str, Any] = {name: reference.columns[name] for name in kinds}
    now: dict[str, Any] = {name: [r.features.get(name) for r in window] for name in kinds}
    if reference.embeddings is not None:
        kinds[EMBEDDING] = "embedding"
        before[EMBEDDING] = reference.embeddings
        now[EMBEDDING] = [r.embedding for r in window if r.embedding is not None]
    data = dataset_drift(before, now, kinds, cfg.drift, seed=seed)

    served_key = task_of(card).served_key
    answers = [r.prediction.get(served_key) for r in window]
    if card.task == "classification":
        prediction = prediction_drift(
            [str(p) for p in reference.test_predictions],
            [str(a) for a in answers],
            "category",
            cfg.drift,
        )
    else:
        prediction = prediction_drift(reference.test_predictions, answers, "number", cfg.drift)

    labelled = [
        (record, feedback[(record.request_id, record.index)])
        for record in answered
        if (record.request_id, record.index) in feedback
    ]
    quality, champion_metric, fell = None, None, False
    if card.task == "classification":
        quality = live_accuracy(
            [str(r.prediction.get(served_key)) for r, _ in labelled],
            [str(f.label) for _, f in labelled],
        )
        champion_metric = champion.info.metrics.get("test_accuracy")
    else:
        quality = live_rmse(
            [float(r.prediction[served_key]) for r, _ in labelled],
            [float(f.label) for _, f in labelled],
            seed,
        )
        champion_metric = champion.info.metrics.get("test_rmse")
    if champion_metric is not None:
        fell = quality_fell(quality, champion_metric, cfg.quality_tolerance)
    flagged = Flagged(
        out_of_contract=sum(any(not w.startswith(OOD_WARNING) for w in r.warnings) for r in window),
        out_of_distribution=sum(any(w.startswith(OOD_WARNING) for w in r.warnings) for r in window),
    )
    return Comparison(data, prediction, quality, fell, champion_metric, flagged)


def labelled_rows(
    records: Sequence[PredictionRecord],
    feedback: Mapping[tuple[str, int], FeedbackRecord],
    card: ModelCard,
    limit: int,
) -> tuple[pa.Table | None, int]:
    """The newest `limit` answered instances that got feedback, as rows of the family's table,
    and how many labelled ones could not be used (a text or image logged without its input)."""
    family = get_family(card.family)
    inputs = card.inputs.get("features")
    instances, labels, unusable = [], [], 0
    for record in reversed(records):
        label = feedback.get((record.request_id, record.index))
        if label is None:
            continue
        if record.input is not None:
            instances.append(record.input)
        elif isinstance(inputs, dict):  # a table's features are logged as they were sent
            instances.append({name: record.features.get(name) for name in inputs})
        else:
            unusable += 1
            continue
        labels.append(label.label)
        if len(instances) == limit:
            break
    if not instances:
        return None, unusable
    return family.labelled_table(instances[::-1], labels[::-1], card), unusable


def history(workspace: Workspace, name: str) -> list[MonitorCheck]:
    path = workspace.pipeline(name).monitoring_history
    if not path.is_file():
        return []
    checks = []
    for line in path.read_text().splitlines():
        try:
            checks.append(MonitorCheck.model_validate_json(line))
        except ValueError:
            continue  # a line cut short by a crash: the others still count
    return checks


FAILED_STATES = ("FAILED", "CRASHED", "CANCELLED")


def failed_retraining(
    past: Sequence[MonitorCheck], state_of: Callable[[str], tuple[str, str | None]]
) -> str | None:
    """What went wrong with the last retraining a check started, if it ended badly (asked once:
    `state_of(run_id)` gives its state type and message); None when it is fine or unknown."""
    last = next((c for c in reversed(past) if c.retraining.started == "started"), None)
    if last is None or last.retraining.run_id is None:
        return None
    state, message = state_of(last.retraining.run_id)
    if state not in FAILED_STATES:
        return None
    return (
        f"the retraining started by the check of v{last.model_version} "
        f"(run {last.retraining.run_id}) ended {state}: {message or 'no message'}; the "
        "champion did not change"
    )


def run(
    workspace: Workspace,
    name: str,
    cfg: MonitorSettings,
    start_retraining: StartRetraining | None,
    clock: Callable[[], float] = time.time,
) -> MonitorCheck:
    """One check of pipeline `name`'s champion; a retraining started when one is wanted."""
    paths = workspace.pipeline(name)
    champion = served_champion(workspace, name)
    past = history(workspace, name)
    since = next(
        (c.window.last for c in reversed(past) if c.model_version == champion.info.version),
        None,
    )
    records = read_predictions(paths.predictions_dir)
    feedback = read_feedback(paths.feedback_dir)
    window = window_of(records, champion.info.version, since, cfg.window_records)
    answered = [record for record in records if record.model_version == champion.info.version]
    found = compare(champion, window, answered, feedback, cfg)
    now = clock()
    drifted = found.data.drifted
    retraining = _retrain(
        workspace, name, champion, records, feedback, cfg, past, now, drifted, found.fell,
        start_retraining,
    )  # fmt: skip
    check = MonitorCheck(
        pipeline=name,
        model_version=champion.info.version,
        model_tag=champion.tag,
        checked_at=now,
        window=Window(
            records=len(window),
            first=window[0].time if window else None,
            last=window[-1].time if window else since,
        ),
        data=found.data,
        prediction=found.prediction,
        quality=found.quality,
        champion_metric=found.champion_metric,
        quality_fell=found.fell,
        flagged=found.flagged,
        drifted=drifted,
        retraining=retraining,
    )
    return _publish(workspace, champion, check, window, past)


def _retrain(
    workspace: Workspace,
    name: str,
    champion: Champion,
    records: Sequence[PredictionRecord],
    feedback: Mapping[tuple[str, int], FeedbackRecord],
    cfg: MonitorSettings,
    past: Sequence[MonitorCheck],
    now: float,
    drifted: bool,
    fell: bool,
    start_retraining: StartRetraining | None,
) -> Retraining:
    reasons = [
        why for why, found in (("the data drifted", drifted), ("live quality fell", fell)) if found
    ]
    if not reasons:
        return Retraining(
            wanted=False, reason="no drift, and live quality holds", started="not_wanted"
        )
    reason = " and ".join(reasons)
    if not cfg.retrain or start_retraining is None:
        return Retraining(
            wanted=True, reason=f"{reason} (monitor.retrain is off)", started="not_wanted"
        )
    last = next((c for c in reversed(past) if c.retraining.started == "started"), None)
    if last is not None and now - last.checked_at < cfg.retrain_cooldown_seconds:
        return Retraining(
            wanted=True,
            reason=f"{reason}, but a retraining started {now - last.checked_at:.0f} s ago "
            f"(monitor.retrain_cooldown_seconds is {cfg.retrain_cooldown_seconds:g})",
            started="cooling_down",
            run_id=last.retraining.run_id,
        )
    overrides: dict[str, Any] = {}
    rows, unusable = labelled_rows(records, feedback, champion.card, cfg.max_feedback_rows)
    count = 0 if rows is None else rows.num_rows
    if rows is not None:
        overrides = {"load": {"extra_rows": str(_save_rows(workspace, name, rows))}}
    note = (
        f"; {unusable} labelled answers were logged without their input (monitor.log_inputs)"
        if unusable
        else ""
    )
    try:
        run_id = start_retraining(overrides, f"monitor: {reason}")
    except Exception as error:  # an alert and a record; the champion stays as it is
        return Retraining(
            wanted=True,
            reason=f"{reason}; starting the retraining failed: {type(error).__name__}: {error}",
            started="failed",
            feedback_rows=count,
        )
    return Retraining(
        wanted=True,
        reason=f"{reason}; retraining on the data plus {count} labelled production rows{note}",
        started="started",
        run_id=run_id,
        feedback_rows=count,
    )


def _save_rows(workspace: Workspace, name: str, rows: pa.Table) -> Path:
    """The rows as a parquet file named by its content: the same rows, the same data version."""
    folder = workspace.pipeline(name).monitoring_dir
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / ".feedback-rows.parquet"
    pq.write_table(rows, scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()[:16]
    path = folder / f"feedback-rows-{digest}.parquet"
    scratch.replace(path)
    return path


def _publish(
    workspace: Workspace,
    champion: Champion,
    check: MonitorCheck,
    window: Sequence[PredictionRecord],
    past: Sequence[MonitorCheck],
) -> MonitorCheck:
    """The report, the MLflow run, `drift.json` and the history line (last: it is the record)."""
    paths = workspace.pipeline(check.pipeline)
    reference = champion.reference
    kinds = {n: k for n, k in reference.kinds.items() if n not in ANSWER_COLUMNS}
    current = {n: [r.features.get(n) for r in window] for n in kinds}
    report = paths.monitoring_dir / "reports" / f"check-{check.checked_at:.0f}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(check, reference.columns, current, kinds, [*past, check])
    write_whole(report, page)
    tracker = Tracker(workspace)
    run_id = tracker.start_run(
        experiment=EXPERIMENT,
        run_name=f"{check.pipeline}-v{check.model_version}",
        tags={
            "mlaas.pipeline": check.pipeline,
            "mlaas.model_version": str(check.model_version),
            "mlaas.drifted": str(check.drifted).lower(),
            "mlaas.retraining": check.retraining.started,
        },
        params={},
    )
    metrics = {
        "window_records": float(check.window.records),
        "drifted_features": float(sum(f.drifted for f in check.data.features)),
        "out_of_distribution": float(check.flagged.out_of_distribution),
        "out_of_contract": float(check.flagged.out_of_contract),
    }
    if check.data.share is not None:
        metrics["drift_share"] = check.data.share
    if check.quality is not None and check.quality.value is not None:
        metrics[f"live_{check.quality.metric}"] = check.quality.value
        metrics["live_feedback"] = float(check.quality.count)
    tracker.log_metrics(run_id, metrics)
    tracker.log_artifact(run_id, report)
    tracker.finish(run_id)
    check = check.model_copy(update={"report": str(report), "mlflow_run_id": run_id})
    write_json(check, paths.drift_record)
    with paths.monitoring_history.open("a") as lines:
        lines.write(check.model_dump_json() + "\n")
    return check
