"""Run one stage by name, its inputs read from the records earlier stages wrote (for `dvc repro`).

The Prefect flow passes the same records from task to task in memory; here each stage is its own
process, so the records come from the files every stage writes beside its outputs. Stage modules
are imported only when their stage runs: `mlaas stage load` need not import MLflow or Lightning.
`STAGE_TABLE` says what each stage reads and writes; `dvc.yaml` is generated from it (`dvcfile`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from mlaas.core.records import (
    NO_SEARCH,
    DatasetInfo,
    Evaluation,
    Registration,
    SearchResult,
    SplitInfo,
    TrainingResult,
    ValidationReport,
)
from mlaas.core.settings import Settings
from mlaas.stages.context import StageContext
from mlaas.stores.files import read_json
from mlaas.stores.workspace import PipelinePaths, Workspace

PathsOf = Callable[[PipelinePaths], tuple[Path, ...]]


def _none(paths: PipelinePaths) -> tuple[Path, ...]:
    return ()


@dataclass(frozen=True)
class StageFiles:
    """What one stage reads and writes: the source of its entry in `dvc.yaml`."""

    name: str
    params: tuple[str, ...]
    """The params sections the stage reads: a change to one of them re-runs it."""
    runs: tuple[str, ...] = ()
    """Modules the stage runs in a process of its own: their imports are its code too."""
    reads: tuple[str, ...] = ()
    """Project files and folders, beside the modules it imports, whose change re-runs the stage."""
    inputs: PathsOf = _none
    outputs: PathsOf = _none
    """Files DVC caches and pushes to its remote."""
    records: PathsOf = _none
    """Files DVC does not cache: they describe state kept elsewhere (the registry, the Bento)."""
    metrics: PathsOf = _none
    plots: PathsOf = _none

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules whose imports, transitively, are the stage's code (`dvc.yaml`'s deps)."""
        return (f"mlaas.stages.{self.name}", *self.runs)


# In the order the pipeline runs them.
STAGE_TABLE = (
    StageFiles(
        "load",
        params=("pipeline", "load"),
        outputs=lambda p: (p.dataset, p.dataset_info),
    ),
    StageFiles(
        "validate",
        params=("pipeline", "load", "validate"),
        inputs=lambda p: (p.dataset,),
        outputs=lambda p: (p.validation_dir,),
    ),
    StageFiles(
        "split",
        params=("pipeline", "load", "split"),
        inputs=lambda p: (p.dataset, p.validation_dir),
        outputs=lambda p: (p.splits_dir,),
    ),
    StageFiles(
        "tune",
        # evaluate: the task's metrics, whose directions the search's objective takes.
        params=("pipeline", "load", "train", "tune", "evaluate"),
        runs=("mlaas.modeling.train_worker",),  # a network's trial fits in a process of its own
        inputs=lambda p: (p.splits_dir,),
        records=lambda p: (p.search_record,),
    ),
    StageFiles(
        "train",
        params=("pipeline", "load", "train", "tune"),
        runs=("mlaas.modeling.train_worker",),  # networks fit in a process of their own
        inputs=lambda p: (p.splits_dir, p.search_record),
        outputs=lambda p: (p.train_dir,),
    ),
    StageFiles(
        "evaluate",
        params=("pipeline", "split", "train", "evaluate"),
        inputs=lambda p: (p.train_dir, p.splits_dir),
        outputs=lambda p: (p.evaluation_record,),
        metrics=lambda p: (p.metrics,),
        # The folder `evaluate_plots.PLOTS` names (not imported: it would load torch into every
        # stage).
        plots=lambda p: (p.evaluation_dir / "plots",),
    ),
    StageFiles(
        "register",
        params=("pipeline",),
        inputs=lambda p: (p.training_result, p.evaluation_record),
        records=lambda p: (p.registration,),
    ),
    StageFiles(
        "promote",
        params=("evaluate", "promote"),  # evaluate: the k of a precision@k to promote on
        inputs=lambda p: (p.registration,),
        records=lambda p: (p.promotion,),
    ),
    StageFiles(
        "package",
        params=("package", "serve", "monitor"),
        # The Bento carries the whole package (bentofile.yaml includes mlaas/**/*.py), not only
        # the modules the stage imports.
        reads=("src/mlaas", "bentofile.yaml", "src/serving-requirements.txt"),
        inputs=lambda p: (p.promotion,),
        records=lambda p: (p.package_result,),
    ),
)
STAGES = tuple(stage.name for stage in STAGE_TABLE)
Record = TypeVar("Record", bound=BaseModel)


def read_record(kind: type[Record], path: Path, stage: str) -> Record:
    return kind.model_validate(read_json(path, stage))


def run_stage(name: str, settings: Settings, workspace: Workspace) -> BaseModel:
    """Run the stage `name` on the records earlier stages left in the pipeline's folder."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    ctx = StageContext(settings, workspace)
    paths = ctx.paths

    def dataset() -> DatasetInfo:
        return read_record(DatasetInfo, paths.dataset_info, "load")

    def validation() -> ValidationReport:
        return read_record(ValidationReport, paths.validation_summary, "validate")

    def splits() -> SplitInfo:
        return read_record(SplitInfo, paths.splits_record, "split")

    def search() -> SearchResult:
        if settings.tune.trials == 0:
            return NO_SEARCH  # nothing to read: `tune` records only that it searched nothing
        return read_record(SearchResult, paths.search_record, "tune")

    def training() -> TrainingResult:
        return read_record(TrainingResult, paths.training_result, "train")

    def evaluation() -> Evaluation:
        return read_record(Evaluation, paths.evaluation_record, "evaluate")

    match name:
        case "load":
            from mlaas.stages import load

            return load.run(ctx)
        case "validate":
            from mlaas.stages import validate

            return validate.run(ctx, dataset())
        case "split":
            from mlaas.stages import split

            return split.run(ctx, dataset(), validation())
        case "tune":
            from mlaas.stages import tune

            return tune.run(ctx, splits())
        case "train":
            from mlaas.stages import train

            return train.run(ctx, splits(), search())
        case "evaluate":
            from mlaas.stages import evaluate

            return evaluate.run(ctx, training(), splits())
        case "register":
            from mlaas.stages import register

            upstream = register.Upstream(
                dataset(), validation(), splits(), training(), evaluation()
            )
            return register.run(ctx, upstream)
        case "promote":
            from mlaas.stages import promote

            registration = read_record(Registration, paths.registration, "register")
            candidate = promote.Candidate(
                registration, dataset(), validation(), evaluation(), splits(), training().search
            )
            return promote.run(ctx, candidate)
        case _:  # "package", the last of STAGES
            from mlaas.stages import package

            return package.run(ctx)
