"""Stage `register`: a new MLflow model version with signature, input example and lineage tags."""

from __future__ import annotations

from mlaas.errors import NotReady
from mlaas.families import get_family
from mlaas.lineage import Lineage
from mlaas.models import load_model
from mlaas.records import (
    DatasetInfo,
    Evaluation,
    Registration,
    SplitInfo,
    TrainingResult,
    ValidationReport,
)
from mlaas.registry import Registry
from mlaas.settings import PipelineSettings
from mlaas.storage import read_table, write_json
from mlaas.tracking import Tracker
from mlaas.workspace import Workspace

EXAMPLE_REQUEST_FILE = "example_request.json"


def lineage_tags(
    pipeline: PipelineSettings,
    dataset: DatasetInfo,
    splits: SplitInfo,
    validation: ValidationReport,
    training: TrainingResult,
    lineage: Lineage,
    model_name: str,
) -> dict[str, str]:
    """The tags that make a version queryable and traceable to its data, code and params."""
    return {
        "mlaas.pipeline": pipeline.name,
        "mlaas.family": pipeline.family,
        "mlaas.model": model_name,
        "mlaas.dataset": dataset.dataset,
        "mlaas.data_hash": dataset.content_hash,
        "mlaas.train_hash": splits.train.content_hash,
        "mlaas.test_hash": splits.test.content_hash,
        "mlaas.validation": validation.summary(),
        "mlaas.model_sha256": training.model_hash,
        "mlaas.seed": str(pipeline.seed),
        **lineage.tags(),
    }


def run(
    pipeline: PipelineSettings,
    workspace: Workspace,
    dataset: DatasetInfo,
    validation: ValidationReport,
    splits: SplitInfo,
    training: TrainingResult,
    evaluation: Evaluation,
    lineage: Lineage,
) -> Registration:
    if evaluation.model_hash != training.model_hash:
        raise NotReady("the evaluation is of another model than the trained one: run `evaluate`")
    registry = Registry(workspace)
    paths = workspace.pipeline(pipeline.name)
    existing = registry.version_of_run(pipeline.name, training.run_id)
    if existing is not None:
        registration = Registration(
            version=existing,
            newly_registered=False,
            tags=registry.version_tags(existing.name, existing.version),
        )
        write_json(registration, paths.registration)
        return registration

    model = load_model(training.model_dir)
    family = get_family(pipeline.family)
    test_rows = read_table(splits.test.path, "split").slice(0, 2)
    example = family.features(test_rows, model.card)
    tags = lineage_tags(
        pipeline, dataset, splits, validation, training, lineage, model.card.model.name
    ) | {f"mlaas.{metric}": f"{value:.6f}" for metric, value in evaluation.metrics.items()}
    version = registry.register(
        pipeline.name,
        training.run_id,
        training.model_dir,
        input_example=example,
        output_example=model.predict(example),
        tags=tags,
    )
    tracker = Tracker(workspace)
    tracker.set_tags(training.run_id, {**tags, "mlaas.version": str(version.version)})
    # A valid body for the endpoint, beside the model: what an app developer copies first.
    request = {"instances": family.example_instances(test_rows, model.card, 2)}
    tracker.log_dict(training.run_id, request, EXAMPLE_REQUEST_FILE)
    registration = Registration(version=version, newly_registered=True, tags=tags)
    write_json(registration, paths.registration)
    return registration
