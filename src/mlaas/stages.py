"""Run one stage by name, its inputs read from the records earlier stages wrote (for `dvc repro`).

The Prefect flow passes the same records from task to task in memory; here each stage is its own
process, so the records come from the files every stage writes beside its outputs. Stage modules
are imported only when their stage runs: `mlaas stage load` need not import MLflow or Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from mlaas.lineage import current_lineage
from mlaas.records import (
    DatasetInfo,
    Evaluation,
    Registration,
    SplitInfo,
    TrainingResult,
    ValidationReport,
)
from mlaas.settings import Settings
from mlaas.storage import read_json
from mlaas.workspace import Workspace

STAGES = ("load", "validate", "split", "train", "evaluate", "register", "promote", "package")
Record = TypeVar("Record", bound=BaseModel)


def read_record(kind: type[Record], path: Path, stage: str) -> Record:
    return kind.model_validate(read_json(path, stage))


def run_stage(name: str, settings: Settings, workspace: Workspace) -> BaseModel:
    paths = workspace.pipeline(settings.pipeline.name)
    pipeline = settings.pipeline

    def dataset() -> DatasetInfo:
        return read_record(DatasetInfo, paths.dataset_info, "load")

    def validation() -> ValidationReport:
        return read_record(ValidationReport, paths.validation_summary, "validate")

    def splits() -> SplitInfo:
        return read_record(SplitInfo, paths.splits_record, "split")

    def training() -> TrainingResult:
        return read_record(TrainingResult, paths.training_result, "train")

    def evaluation() -> Evaluation:
        return read_record(Evaluation, paths.evaluation_record, "evaluate")

    match name:
        case "load":
            from mlaas import load

            return load.run(pipeline, settings.load, workspace)
        case "validate":
            from mlaas import validate

            return validate.run(pipeline, settings.load, settings.validate_, workspace, dataset())
        case "split":
            from mlaas import split

            return split.run(
                pipeline, settings.load, settings.split, workspace, dataset(), validation()
            )
        case "train":
            from mlaas import train

            lineage = current_lineage(settings.as_params())
            return train.run(pipeline, settings.load, settings.train, workspace, splits(), lineage)
        case "evaluate":
            from mlaas import evaluate

            return evaluate.run(
                pipeline,
                settings.split,
                settings.train,
                settings.evaluate,
                workspace,
                training(),
                splits(),
            )
        case "register":
            from mlaas import register

            return register.run(
                pipeline,
                workspace,
                dataset(),
                validation(),
                splits(),
                training(),
                evaluation(),
                current_lineage(settings.as_params()),
            )
        case "promote":
            from mlaas import promote

            return promote.run(
                pipeline,
                settings.promote,
                workspace,
                dataset(),
                validation(),
                evaluation(),
                read_record(Registration, paths.registration, "register"),
                current_lineage(settings.as_params()),
            )
        case "package":
            from mlaas import package

            return package.run(pipeline, settings.package, settings.serve, workspace)
    raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
