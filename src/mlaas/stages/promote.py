"""Stage `promote`: alias `champion` only for a version that beats the champion; else `challenger`.

The decision is taken once per version and recorded (version tags, `manifest.json`), so running
the stage again reports it instead of deciding anew. When the two versions were tested on
different rows (the data changed), the champion is scored on the candidate's test split and the
decision compares those figures (`stages.rescore`). Promotion (and rollback, `stages.rollback`)
is one alias move, made under the model's registry lock, and recorded in the model's champion
history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlaas.core.confidence import (
    CONFIDENCE,
    Interval,
    interval_of,
    measured_metric,
    too_small_warning,
)
from mlaas.core.errors import NotReady, SettingsError
from mlaas.core.lineage import Lineage
from mlaas.core.records import (
    NO_SEARCH,
    DatasetInfo,
    Decision,
    Evaluation,
    ModelVersionRef,
    Promotion,
    Registration,
    SearchResult,
    SplitInfo,
    ValidationReport,
)
from mlaas.core.settings import EvaluateSettings, PromoteSettings
from mlaas.core.tasks import TASKS
from mlaas.modeling.bundle import MANIFEST_FILE
from mlaas.stages.context import StageContext
from mlaas.stages.ordered_writes import Step, write_in_order
from mlaas.stages.rescore import score_champion, tested_on_same_rows
from mlaas.stores.files import write_json
from mlaas.stores.locks import registry_lock
from mlaas.stores.registry import CHALLENGER, CHAMPION, Registry
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace

DECISION_TAG = "mlaas.decision"


@dataclass(frozen=True)
class Rule:
    """Which metric decides, which way is better, and by how much a version must win."""

    metric: str
    higher_is_better: bool
    min_improvement: float


def promoted_metric(cfg: PromoteSettings, task: str) -> str:
    """The metric promotion decides on: the settings', else the task's."""
    return cfg.metric or TASKS[task].default_metric


def rule_for(cfg: PromoteSettings, task: str, evaluate_cfg: EvaluateSettings) -> Rule:
    """The settings' rule, with the task's metric and its declared direction where the settings
    leave them (`evaluate_cfg` names some of the task's metrics: the k of precision@k)."""
    metric = promoted_metric(cfg, task)
    higher = cfg.higher_is_better
    if higher is None:
        declared = TASKS[task].metrics(evaluate_cfg).get(metric)
        if declared is None:
            raise SettingsError(
                f"promote.metric: the {task} task does not declare whether a higher {metric!r} "
                "is better; set promote.higher_is_better to true or false"
            )
        higher = declared.higher_is_better
    return Rule(metric=metric, higher_is_better=higher, min_improvement=cfg.min_improvement)


def decide(
    candidate: float, champion: float | None, champion_version: int | None, rule: Rule
) -> Decision:
    """Promote when there is no champion, or when the candidate beats it by more than the margin."""
    if champion is None:
        promoted, reason = True, "there is no champion yet"
    else:
        promoted = _beats(candidate, champion, rule)
        reason = (
            f"{rule.metric} {candidate:.4f} {_comparison(promoted)} champion "
            f"v{champion_version}'s {champion:.4f} by more than {rule.min_improvement}"
        )
    return Decision(
        promoted=promoted,
        alias=CHAMPION if promoted else CHALLENGER,
        reason=reason,
        metric=rule.metric,
        candidate_value=candidate,
        champion_version=champion_version,
        champion_value=champion,
        min_improvement=rule.min_improvement,
    )


@dataclass(frozen=True)
class SameSplit:
    """Candidate and champion measured on the candidate's test split (the champion rescored)."""

    candidate_version: int
    split: DatasetInfo
    candidate_metrics: Mapping[str, float]
    champion_metrics: Mapping[str, float]
    champion_own: float | None
    """The champion's recorded figure on its own test split."""


def decide_on_same_split(same: SameSplit, champion_version: int, rule: Rule) -> Decision:
    """`decide` on both versions' figures on one split, each with its interval, the split and
    the champion's own figure recorded beside them."""
    metric, measured = rule.metric, measured_metric(rule.metric)
    candidate, champion = same.candidate_metrics[metric], same.champion_metrics[metric]
    candidate_interval = interval_of(same.candidate_metrics, measured)
    champion_interval = interval_of(same.champion_metrics, measured)
    promoted = _beats(candidate, champion, rule)
    own = (
        f"; v{champion_version} scored {same.champion_own:.4f} on its own"
        if same.champion_own is not None
        else ""
    )
    reason = (
        f"{metric} {_shown(candidate, candidate_interval)} {_comparison(promoted)} champion "
        f"v{champion_version}'s {_shown(champion, champion_interval)} by more than "
        f"{rule.min_improvement} on the same test split (v{same.candidate_version}'s, "
        f"{same.split.rows:,} rows{own})"
    )
    return Decision(
        promoted=promoted,
        alias=CHAMPION if promoted else CHALLENGER,
        reason=reason,
        metric=metric,
        candidate_value=candidate,
        champion_version=champion_version,
        champion_value=champion,
        min_improvement=rule.min_improvement,
        compared_on="the candidate's test split",
        compared_on_rows=same.split.rows,
        compared_on_hash=same.split.content_hash,
        candidate_ci_low=candidate_interval.low if candidate_interval else None,
        candidate_ci_high=candidate_interval.high if candidate_interval else None,
        champion_ci_low=champion_interval.low if champion_interval else None,
        champion_ci_high=champion_interval.high if champion_interval else None,
        champion_own_value=same.champion_own,
    )


def _beats(candidate: float, champion: float, rule: Rule) -> bool:
    gain = candidate - champion if rule.higher_is_better else champion - candidate
    return gain > rule.min_improvement


def _comparison(promoted: bool) -> str:
    return "beats" if promoted else "does not beat"


def _shown(value: float, interval: Interval | None) -> str:
    """`0.9100 [0.8800, 0.9400]`, or the figure alone where it has no interval."""
    if interval is None:
        return f"{value:.4f}"
    return f"{value:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


@dataclass(frozen=True)
class Candidate:
    """The version to decide on, and the records its manifest is made of."""

    registration: Registration
    dataset: DatasetInfo
    validation: ValidationReport
    evaluation: Evaluation
    splits: SplitInfo
    """Its test split is where the champion is scored when the two were tested on other rows."""
    search: SearchResult = NO_SEARCH
    """The hyperparameter search that chose its settings, if one did."""


def build_manifest(
    candidate: Candidate, decision: Decision, lineage: Lineage, split_warning: str | None = None
) -> dict[str, Any]:
    """The whole reproducibility record of one version, in one file."""
    version = candidate.registration.version
    evaluation, validation = candidate.evaluation, candidate.validation
    return {
        "model": {**version.model_dump(), "sha256": evaluation.model_hash},
        "git_commit": lineage.git_commit,
        "code_version": lineage.code_version,
        "data": candidate.dataset.model_dump(mode="json"),
        "params": lineage.params,
        "seed": lineage.params["pipeline"]["seed"],
        "lock_file": {"path": lineage.lock_file, "sha256": lineage.lock_hash},
        "packages": lineage.packages,
        "validation": {
            "success": validation.success,
            "summary": validation.summary(),
            "failures": validation.failures,
        },
        "metrics": evaluation.metrics,
        "test_split": {
            "rows": evaluation.test_rows,
            "content_hash": candidate.splits.test.content_hash,
            "confidence_level": CONFIDENCE,
            "too_small_warning": split_warning,
        },
        "search": candidate.search.summary() if candidate.search.trials else None,
        "promotion": decision.model_dump(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run(ctx: StageContext, candidate: Candidate) -> Promotion:
    workspace, paths, evaluation = ctx.workspace, ctx.paths, candidate.evaluation
    cfg, evaluate_cfg = ctx.settings.promote, ctx.settings.evaluate
    registry = Registry(workspace)
    version = candidate.registration.version
    # Inside the lock the champion is the one as it is now, not as it was when this run started:
    # two runs promoting at once decide one after the other.
    with registry_lock(workspace, ctx.pipeline.name):
        recorded = registry.version_tags(version.name, version.version).get(DECISION_TAG)
        if recorded is not None:
            decision = Decision.model_validate_json(recorded)
            decided_now = False
        else:
            decision = _decide_now(registry, cfg, evaluate_cfg, candidate)
            warning = test_split_warning(cfg, evaluate_cfg, evaluation)
            if warning is not None:
                ctx.log.warning("%s v%d: %s", version.name, version.version, warning)
            manifest = build_manifest(candidate, decision, ctx.lineage, warning)
            # Logged before the decision is recorded: a champion always has its manifest.
            write_json(manifest, paths.manifest)
            Tracker(workspace).log_dict(version.run_id, manifest, MANIFEST_FILE)
            _record_decision(registry, workspace, version, decision)
            decided_now = True
        champion_now = registry.version_with_alias(version.name, CHAMPION)
    if champion_now is None:
        raise NotReady(
            f"model {version.name!r} has no {CHAMPION!r} alias (was it removed by hand?); "
            f"set it in the MLflow UI or with MlflowClient.set_registered_model_alias"
        )
    promotion = Promotion(
        version=version, decision=decision, champion=champion_now, decided_now=decided_now
    )
    write_json(promotion, paths.promotion)
    return promotion


def test_split_warning(
    cfg: PromoteSettings, evaluate_cfg: EvaluateSettings, evaluation: Evaluation
) -> str | None:
    """Why the test split cannot tell models apart on the metric promotion decides on, if so."""
    rule = rule_for(cfg, evaluation.task, evaluate_cfg)
    metric = measured_metric(rule.metric)  # deciding on an interval's bound: judge its metric
    value = evaluation.metrics.get(metric)
    if value is None:
        return None
    return too_small_warning(
        evaluation.metrics,
        metric,
        TASKS[evaluation.task].scale(metric, value),
        rule.min_improvement,
        evaluation.test_rows,
    )


def _decide_now(
    registry: Registry, cfg: PromoteSettings, evaluate_cfg: EvaluateSettings, candidate: Candidate
) -> Decision:
    evaluation, version = candidate.evaluation, candidate.registration.version
    metric = promoted_metric(cfg, evaluation.task)
    # Before the direction is looked up: a misspelt name is told the metrics it could choose.
    if metric not in evaluation.metrics:
        raise SettingsError(
            f"promote.metric: {metric!r} is not an evaluated metric; "
            f"choose one of {sorted(evaluation.metrics)}"
        )
    rule = rule_for(cfg, evaluation.task, evaluate_cfg)
    champion = registry.version_with_alias(version.name, CHAMPION)
    champion_value = registry.run_metrics(champion.run_id).get(rule.metric) if champion else None
    own_figures = decide(
        evaluation.metrics[rule.metric],
        champion_value,
        champion.version if champion else None,
        rule,
    )
    if champion is None or tested_on_same_rows(registry, champion, candidate.splits):
        return own_figures
    rescored = score_champion(registry, champion, candidate.splits, rule.metric, evaluate_cfg)
    if rescored.metrics is None:
        return own_figures.model_copy(
            update={
                "reason": f"{own_figures.reason}, each on its own test split: champion "
                f"v{champion.version} could not be scored on v{version.version}'s "
                f"({rescored.failure})",
                "rescoring_failed": rescored.failure,
            }
        )
    same = SameSplit(
        candidate_version=version.version,
        split=candidate.splits.test,
        candidate_metrics=evaluation.metrics,
        champion_metrics=rescored.metrics,
        champion_own=champion_value,
    )
    return decide_on_same_split(same, champion.version, rule)


def _record_decision(
    registry: Registry, workspace: Workspace, candidate: ModelVersionRef, decision: Decision
) -> None:
    """Tag the decision, move the alias and, for a new champion, extend the champion history."""
    name, version = candidate.name, candidate.version
    holder_before = registry.aliases(name).get(decision.alias)
    history = champion_history(registry, name)
    steps: list[Step] = [
        Step(
            lambda: registry.set_version_tags(
                name, version, {DECISION_TAG: decision.model_dump_json()}
            ),
            lambda: registry.delete_version_tag(name, version, DECISION_TAG),
        ),
        Step(
            lambda: registry.set_alias(name, decision.alias, version),
            lambda: _give_alias_back(registry, name, decision.alias, holder_before),
        ),
    ]
    if decision.promoted:
        steps.append(Step(lambda: registry.set_champion_history(name, [*history, version])))
    write_in_order(steps, workspace, f"promoting {name} v{version}")


def champion_history(registry: Registry, name: str) -> list[int]:
    """The recorded champion history, or for a model promoted before it was recorded, every
    version whose decision says promoted."""
    recorded = registry.champion_history(name)
    if recorded is not None:
        return recorded
    return [
        version
        for version in registry.versions(name)
        if json.loads(registry.version_tags(name, version).get(DECISION_TAG, "{}")).get("promoted")
    ]


def _give_alias_back(registry: Registry, name: str, alias: str, holder: int | None) -> None:
    if holder is None:
        registry.delete_alias(name, alias)
    else:
        registry.set_alias(name, alias, holder)
