"""Stage `promote`: alias `champion` only for a version that beats the champion; else `challenger`.

The decision is taken once per version and recorded (version tags, `manifest.json`), so running
the stage again reports it instead of deciding anew. Promotion (and rollback, `stages.rollback`)
is one alias move, made under the model's registry lock, and recorded in the model's champion
history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlaas.core.confidence import CONFIDENCE, measured_metric, too_small_warning
from mlaas.core.errors import NotReady, SettingsError
from mlaas.core.lineage import Lineage
from mlaas.core.records import (
    DatasetInfo,
    Decision,
    Evaluation,
    ModelVersionRef,
    Promotion,
    Registration,
    ValidationReport,
)
from mlaas.core.settings import EvaluateSettings, PromoteSettings
from mlaas.core.tasks import TASKS
from mlaas.modeling.bundle import MANIFEST_FILE
from mlaas.stages.context import StageContext
from mlaas.stages.ordered_writes import Step, write_in_order
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
        gain = candidate - champion if rule.higher_is_better else champion - candidate
        promoted = gain > rule.min_improvement
        comparison = "beats" if promoted else "does not beat"
        reason = (
            f"{rule.metric} {candidate:.4f} {comparison} champion v{champion_version}'s "
            f"{champion:.4f} by more than {rule.min_improvement}"
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
class Candidate:
    """The version to decide on, and the records its manifest is made of."""

    registration: Registration
    dataset: DatasetInfo
    validation: ValidationReport
    evaluation: Evaluation


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
            "confidence_level": CONFIDENCE,
            "too_small_warning": split_warning,
        },
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
            decision = _decide_now(registry, cfg, evaluate_cfg, evaluation, version)
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
    registry: Registry,
    cfg: PromoteSettings,
    evaluate_cfg: EvaluateSettings,
    evaluation: Evaluation,
    candidate: ModelVersionRef,
) -> Decision:
    metric = promoted_metric(cfg, evaluation.task)
    # Before the direction is looked up: a misspelt name is told the metrics it could choose.
    if metric not in evaluation.metrics:
        raise SettingsError(
            f"promote.metric: {metric!r} is not an evaluated metric; "
            f"choose one of {sorted(evaluation.metrics)}"
        )
    rule = rule_for(cfg, evaluation.task, evaluate_cfg)
    champion = registry.version_with_alias(candidate.name, CHAMPION)
    champion_value = registry.run_metrics(champion.run_id).get(rule.metric) if champion else None
    return decide(
        evaluation.metrics[rule.metric],
        champion_value,
        champion.version if champion else None,
        rule,
    )


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
