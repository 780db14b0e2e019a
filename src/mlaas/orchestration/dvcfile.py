"""`dvc.yaml`, generated from the stage table, and `mlaas repro`, which prepares a pipeline for it.

DVC's `params:` needs every key it names to be in the file it reads, but a params file may leave
out any section whose defaults it keeps. So `mlaas repro --params FILE` writes FILE's settings,
defaults filled in, to `.mlaas/pipelines/NAME/params.yaml`, and lists NAME in
`.mlaas/dvc/pipelines.yaml`; `dvc.yaml` gives each listed pipeline its own stages (`load@NAME`,
...), which read that file. Each pipeline therefore has its own entries in `dvc.lock`: reproducing
one pipeline neither re-runs nor removes another's outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mlaas.core.errors import MlaasError
from mlaas.core.settings import Settings
from mlaas.orchestration.imports import imported_files
from mlaas.stages.table import STAGE_TABLE, StageFiles
from mlaas.stores.workspace import DEFAULT_HOME, PipelinePaths, Workspace

DVC_YAML = Path("dvc.yaml")
PACKAGE = Path(__file__).resolve().parents[1]
SOURCE = Path("src")  # where the package lies in the project, as `dvc.yaml` names it
# The stages' home, relative to the project: DVC's cache and remote live there too (.dvc/config).
HOME = Path(DEFAULT_HOME)
PIPELINE_LIST = HOME / "dvc" / "pipelines.yaml"
PIPELINE_LIST_KEY = "pipelines"
RESOLVED_PARAMS = "params.yaml"
ITEM = "${item}"  # DVC's name for the pipeline a `foreach` stage is expanded for

HEADER = f"""\
# Generated from the stage table (src/mlaas/stages/table.py) by `mlaas dvc-yaml`: do not edit.
# Each stage runs once per pipeline listed in {PIPELINE_LIST}, as `STAGE@NAME`, on
# the settings that `mlaas repro --params FILE` wrote, defaults filled in, to
# {HOME}/pipelines/NAME/{RESOLVED_PARAMS}. Start with `make repro PARAMS=FILE`; then plain
# `dvc` commands (status, repro, push) work on every pipeline listed. Outputs live under {HOME}/.
"""


def _posix(paths: tuple[Path, ...]) -> list[str]:
    return [path.as_posix() for path in paths]


def params_file(paths: PipelinePaths) -> Path:
    """Where a pipeline's resolved settings live: the file its DVC stages read."""
    return paths.root / RESOLVED_PARAMS


def stage_paths() -> PipelinePaths:
    """A pipeline's files as `dvc.yaml` names them: relative to the project, `${item}` for the
    pipeline's name."""
    # The folder Workspace gives every pipeline; its name check would refuse `${item}` itself.
    some_pipeline = Workspace(HOME).pipeline("name").root
    return PipelinePaths(some_pipeline.with_name(ITEM))


def code_deps(stage: StageFiles) -> list[str]:
    """The project files whose change re-runs the stage: the modules it imports, what it reads."""
    # Files, not their folders: a folder's hash would also take in the `__pycache__` that a later
    # stage writes into it, and any module the stage never imports.
    modules = imported_files(stage.modules, PACKAGE)
    files = [SOURCE / module.relative_to(PACKAGE.parent) for module in modules]
    folders = [Path(read) for read in stage.reads]
    not_in_a_folder_read = [f for f in files if not any(f.is_relative_to(d) for d in folders)]
    return [*_posix(tuple(not_in_a_folder_read)), *stage.reads]


def dvc_stage(stage: StageFiles) -> dict[str, Any]:
    """One stage of `dvc.yaml`, expanded by DVC for each listed pipeline."""
    paths = stage_paths()
    settings = params_file(paths).as_posix()
    entry: dict[str, Any] = {
        "cmd": f"mlaas --home {HOME} stage {stage.name} --params {settings}",
        "deps": [*code_deps(stage), *_posix(stage.inputs(paths))],
        "params": [{settings: list(stage.params)}],
    }
    outs = [
        *_posix(stage.outputs(paths)),
        *({path: {"cache": False}} for path in _posix(stage.records(paths))),
    ]
    if outs:
        entry["outs"] = outs
    for kind, files in (("metrics", stage.metrics(paths)), ("plots", stage.plots(paths))):
        if files:
            entry[kind] = [{path: {"cache": False}} for path in _posix(files)]
    return {"foreach": f"${{{PIPELINE_LIST_KEY}}}", "do": entry}


def render_dvc_yaml(stages: tuple[StageFiles, ...] = STAGE_TABLE) -> str:
    """The text of `dvc.yaml` for these stages."""
    document = {
        "vars": [PIPELINE_LIST.as_posix()],
        "stages": {stage.name: dvc_stage(stage) for stage in stages},
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100)


def with_pipeline(listed: list[str], name: str) -> list[str]:
    """The pipeline list with `name` in it, once, in a stable order."""
    return sorted({*listed, name})


def stage_targets(name: str, stages: tuple[StageFiles, ...] = STAGE_TABLE) -> list[str]:
    """The DVC names of one pipeline's stages."""
    return [f"{stage.name}@{name}" for stage in stages]


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)  # a reader (DVC) never sees half a file


def read_pipeline_list(project: Path) -> list[str]:
    path = project / PIPELINE_LIST
    if not path.is_file():
        return []
    listed = yaml.safe_load(path.read_text())
    # Machine state that mlaas alone writes: anything else in it is treated as an empty list.
    names = listed.get(PIPELINE_LIST_KEY) if isinstance(listed, dict) else None
    return [str(name) for name in names] if isinstance(names, list) else []


def prepare(settings: Settings, project: Path) -> list[str]:
    """Write the settings where this pipeline's DVC stages read them and list the pipeline for
    `dvc.yaml`; return the pipeline's stage targets."""
    name = settings.pipeline.name
    resolved = yaml.safe_dump(settings.as_params(), sort_keys=False)
    _write_if_changed(params_file(Workspace(project / HOME).pipeline(name)), resolved)
    listed = with_pipeline(read_pipeline_list(project), name)
    _write_if_changed(project / PIPELINE_LIST, yaml.safe_dump({PIPELINE_LIST_KEY: listed}))
    return stage_targets(name)


def _dvc(project: Path, *arguments: str) -> None:
    """Run `dvc` in the project, with this environment's `mlaas` on PATH for the stages."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(bin_dir / "dvc"), *arguments], cwd=project, env=env)
    if done.returncode != 0:
        raise MlaasError(f"`dvc {' '.join(arguments)}` failed (exit {done.returncode}; see above)")


def reproduce(settings: Settings, project: Path) -> None:
    """`dvc repro` one pipeline's stages, then `dvc push` what they cached to the DVC remote."""
    if not (project / DVC_YAML).is_file():
        raise MlaasError(f"no {DVC_YAML} in {project}: run `mlaas repro` in the project's folder")
    targets = prepare(settings, project)
    _dvc(project, "repro", *targets)
    _dvc(project, "push", *targets)


def write_dvc_yaml(project: Path, check: bool = False) -> bool:
    """Write `dvc.yaml` from the stage table (`check`: only compare); True if it was current."""
    path = project / DVC_YAML
    current = path.is_file() and path.read_text() == render_dvc_yaml()
    if not current and not check:
        _write_if_changed(path, render_dvc_yaml())
    return current
