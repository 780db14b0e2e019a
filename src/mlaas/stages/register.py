"""Stage `register`: a new MLflow model version with signature, input example and lineage tags."""

from __future__ import annotations

from dataclasses import dataclass

from mlaas.core.errors import NotReady
from mlaas.core.lineage import Lineage
from mlaas.core.records import (
    DatasetInfo,
    Evaluation,
    ModelVersionRef,
    Registration,
    SplitInfo,
    TrainingResult,
    ValidationReport,
)
from mlaas.core.settings import PipelineSettings
from mlaas.modeling.pyfunc import InstancePredictor
from mlaas.stages.context import StageContext
from mlaas.stores.files import read_table, write_json
from mlaas.stores.locks import registry_lock
from mlaas.stores.registry import Registry, ServedExample, store_error
from mlaas.stores.tracking import Tracker

EXAMPLE_REQUEST_FILE = "example_request.json"
# A run tag: which version was registered from the run.
VERSION_TAG = "mlaas.version"


@dataclass(frozen=True)
class Upstream:
    """The records of the stages before `register`: what a version is traced back to."""

    dataset: DatasetInfo
    validation: ValidationReport
    splits: SplitInfo
    training: TrainingResult
    evaluation: Evaluation


def lineage_tags(
    pipeline: PipelineSettings, upstream: Upstream, lineage: Lineage, model_name: str
) -> dict[str, str]:
    """The tags that make a version queryable and traceable to its data, code and params."""
    dataset, splits = upstream.dataset, upstream.splits
    return {
        "mlaas.pipeline": pipeline.name,
        "mlaas.family": pipeline.family,
        "mlaas.model": model_name,
        "mlaas.dataset": dataset.dataset,
        "mlaas.data_hash": dataset.content_hash,
        "mlaas.train_hash": splits.train.content_hash,
        "mlaas.test_hash": splits.test.content_hash,
        "mlaas.validation": upstream.validation.summary(),
        "mlaas.model_sha256": upstream.training.model_hash,
        "mlaas.seed": str(pipeline.seed),
        **lineage.tags(),
    }


def run(ctx: StageContext, upstream: Upstream) -> Registration:
    training = upstream.training
    if upstream.evaluation.model_hash != training.model_hash:
        raise NotReady("the evaluation is of another model than the trained one: run `evaluate`")
    # Versions of one pipeline are created one process at a time, so they are numbered in turn.
    with registry_lock(ctx.workspace, ctx.pipeline.name):
        registration = _register(ctx, upstream)
    write_json(registration, ctx.paths.registration)
    return registration


def _register(ctx: StageContext, upstream: Upstream) -> Registration:
    pipeline, workspace, training = ctx.pipeline, ctx.workspace, upstream.training
    registry = Registry(workspace)
    tracker = Tracker(workspace)
    existing = registry.version_of_run(pipeline.name, training.run_id)
    if existing is not None:
        # Written again in case an earlier attempt stopped before it could write it.
        tracker.set_tags(training.run_id, {VERSION_TAG: str(existing.version)})
        tags = registry.version_tags(existing.name, existing.version)
        return Registration(version=existing, newly_registered=False, tags=tags)

    from mlaas.modeling.models import load_model  # torch: only to register a new version

    predictor = InstancePredictor(load_model(training.model_dir))
    # Training rows: the model knows every id in them (a test row may rate an item that only
    # the test split has, which the endpoint refuses).
    train_rows = read_table(upstream.splits.train.path, "split").slice(0, 2)
    instances = predictor.family.example_instances(train_rows, predictor.card, 2)
    example = ServedExample(instances, predictor.predict(instances), predictor.instances_schema())
    tags = lineage_tags(pipeline, upstream, ctx.lineage, predictor.card.model.name) | {
        f"mlaas.{metric}": f"{value:.6f}" for metric, value in upstream.evaluation.metrics.items()
    }
    # Everything that can be written before the version exists is: a failure here leaves no
    # version behind. A valid body for the endpoint, beside the model, is what an app developer
    # copies first.
    tracker.set_tags(training.run_id, tags)
    tracker.log_dict(training.run_id, {"instances": instances}, EXAMPLE_REQUEST_FILE)
    version = registry.register(
        pipeline.name, training.run_id, training.model_dir, example=example, tags=tags
    )
    try:
        tracker.set_tags(training.run_id, {VERSION_TAG: str(version.version)})
    except Exception as error:
        outcome = (
            "was deleted again (MLflow does not reuse its number)"
            if _discard_half_made(registry, version)
            else "could not be deleted: the next run of this model completes it"
        )
        raise store_error(
            workspace,
            f"failed while registering {version.name} v{version.version}, which {outcome}",
            error,
        ) from error
    return Registration(version=version, newly_registered=True, tags=tags)


def _discard_half_made(registry: Registry, version: ModelVersionRef) -> bool:
    """Best effort: a store that refuses writes may refuse this one too."""
    try:
        registry.delete_version(version.name, version.version)
    except Exception:
        return False
    return True
