"""Stage `promote`: alias `champion` only for a version that beats the champion; else `challenger`.

The decision is taken once per version and recorded (version tags, `manifest.json`), so running
the stage again reports it instead of deciding anew. Promotion and rollback are one alias move.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlaas.bundle import MANIFEST_FILE
from mlaas.errors import NotReady, SettingsError
from mlaas.lineage import Lineage
from mlaas.records import (
    DatasetInfo,
    Decision,
    Evaluation,
    ModelVersionRef,
    Promotion,
    Registration,
    ValidationReport,
)
from mlaas.registry import CHALLENGER, CHAMPION, Registry
from mlaas.settings import PipelineSettings, PromoteSettings
from mlaas.storage import write_json
from mlaas.tasks import TASKS
from mlaas.tracking import Tracker
from mlaas.workspace import Workspace

DECISION_TAG = "mlaas.decision"


@dataclass(frozen=True)
class Rule:
    """Which metric decides, which way is better, and by how much a version must win."""

    metric: str
    higher_is_better: bool
    min_improvement: float


def rule_for(cfg: PromoteSettings, task: str) -> Rule:
    """The settings' rule, with the task's metric and direction where the settings leave them."""
    known = TASKS[task]
    metric = cfg.metric or known.default_metric
    higher = cfg.higher_is_better
    return Rule(
        metric=metric,
        higher_is_better=known.higher_is_better(metric) if higher is None else higher,
        min_improvement=cfg.min_improvement,
    )


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


def build_manifest(
    version: ModelVersionRef,
    decision: Decision,
    dataset: DatasetInfo,
    validation: ValidationReport,
    evaluation: Evaluation,
    lineage: Lineage,
    model_hash: str,
) -> dict[str, Any]:
    """The whole reproducibility record of one version, in one file."""
    return {
        "model": {**version.model_dump(), "sha256": model_hash},
        "git_commit": lineage.git_commit,
        "code_version": lineage.code_version,
        "data": dataset.model_dump(mode="json"),
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
        "promotion": decision.model_dump(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run(
    pipeline: PipelineSettings,
    cfg: PromoteSettings,
    workspace: Workspace,
    dataset: DatasetInfo,
    validation: ValidationReport,
    evaluation: Evaluation,
    registration: Registration,
    lineage: Lineage,
) -> Promotion:
    registry = Registry(workspace)
    paths = workspace.pipeline(pipeline.name)
    candidate = registration.version
    recorded = registry.version_tags(candidate.name, candidate.version).get(DECISION_TAG)
    if recorded is not None:
        decision = Decision.model_validate_json(recorded)
        decided_now = False
    else:
        rule = rule_for(cfg, evaluation.task)
        if rule.metric not in evaluation.metrics:
            raise SettingsError(
                f"promote.metric: {rule.metric!r} is not an evaluated metric; "
                f"choose one of {sorted(evaluation.metrics)}"
            )
        champion = registry.version_with_alias(candidate.name, CHAMPION)
        champion_value = (
            registry.run_metrics(champion.run_id).get(rule.metric) if champion else None
        )
        decision = decide(
            evaluation.metrics[rule.metric],
            champion_value,
            champion.version if champion else None,
            rule,
        )
        registry.set_alias(candidate.name, decision.alias, candidate.version)
        registry.set_version_tags(
            candidate.name, candidate.version, {DECISION_TAG: decision.model_dump_json()}
        )
        manifest = build_manifest(
            candidate, decision, dataset, validation, evaluation, lineage, evaluation.model_hash
        )
        write_json(manifest, paths.manifest)
        Tracker(workspace).log_dict(candidate.run_id, manifest, MANIFEST_FILE)
        decided_now = True
    champion_now = registry.version_with_alias(candidate.name, CHAMPION)
    if champion_now is None:
        raise NotReady(
            f"model {candidate.name!r} has no {CHAMPION!r} alias (was it removed by hand?); "
            f"set it in the MLflow UI or with MlflowClient.set_registered_model_alias"
        )
    promotion = Promotion(
        version=candidate, decision=decision, champion=champion_now, decided_now=decided_now
    )
    write_json(promotion, paths.promotion)
    return promotion
