"""Stage `package`: the champion into the BentoML model store, then `bentoml build` a Bento.

The champion's files are checked against the content hash recorded at registration before they
are packaged: bytes changed after registration are refused. A Bento already built for the same
champion, serving settings and code is reused when it is the newest Bento (the one served), so
packaging again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mlaas.core.errors import NotReady, SettingsError
from mlaas.core.lineage import file_hash, source_hash
from mlaas.core.records import ModelVersionRef, Packaged
from mlaas.core.settings import MonitorSettings, PackageSettings, PipelineSettings, ServeSettings
from mlaas.modeling.bundle import (
    MANIFEST_FILE,
    MODEL_SUBDIR,
    SERVING_FILE,
    ServingInfo,
    verify_model_dir,
)
from mlaas.stages.context import StageContext
from mlaas.stores.bento_store import bentoml_store_home
from mlaas.stores.files import write_json
from mlaas.stores.locks import registry_lock
from mlaas.stores.registry import CHAMPION, Registry
from mlaas.stores.workspace import Workspace

PACKAGE_KEY_LABEL = "mlaas.package_key"
MODEL_TAG_LABEL = "mlaas.model_tag"


def package_key(
    version: ModelVersionRef,
    serve: ServeSettings,
    monitor: MonitorSettings,
    bentofile: Path,
    build_context: Path,
) -> str:
    """Identity of a Bento: which champion, how it is served and watched, and the code."""
    digest = hashlib.sha256()
    for part in (
        version.model_dump_json(),
        serve.model_dump_json(),
        monitor.model_dump_json(),
        file_hash(bentofile),
        *(file_hash(path) for path in _requirements_files(bentofile, build_context)),
        source_hash(build_context),
    ):
        digest.update(part.encode())
    return digest.hexdigest()[:32]


def _requirements_files(bentofile: Path, build_context: Path) -> list[Path]:
    """The requirements file the Bento installs, when the bentofile names one (it lies outside
    the build context's sources: a new lock must make a new Bento too)."""
    python = (yaml.safe_load(bentofile.read_text()) or {}).get("python") or {}
    named = python.get("requirements_txt")
    return [build_context / named] if named and (build_context / named).is_file() else []


def _latest_bento(name: str) -> Any | None:
    """The Bento `mlaas serve` serves: the newest one of the pipeline."""
    import bentoml

    try:
        return bentoml.bentos.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return None


def run(ctx: StageContext) -> Packaged:
    pipeline, workspace = ctx.pipeline, ctx.workspace
    # One build at a time per pipeline, each of the champion as it is then: the newest Bento is
    # the current champion's even when two runs promote and package at once.
    with registry_lock(workspace, pipeline.name):
        return _package(
            pipeline, ctx.settings.package, ctx.settings.serve, ctx.settings.monitor, workspace
        )


def _package(
    pipeline: PipelineSettings,
    cfg: PackageSettings,
    serve: ServeSettings,
    monitor: MonitorSettings,
    workspace: Workspace,
) -> Packaged:
    import bentoml  # here, not at the top: BentoML reads BENTOML_HOME when first imported

    store_home = bentoml_store_home()
    if store_home != workspace.bentoml_home:
        # BentoML's store is process-wide, read from BENTOML_HOME when it is first imported.
        raise SettingsError(
            f"BentoML's store is {store_home}, not this workspace's {workspace.bentoml_home}: "
            "start mlaas through its CLI, or set MLAAS_HOME before importing BentoML"
        )
    for path, key in ((cfg.bentofile, "bentofile"), (cfg.build_context, "build_context")):
        if not path.exists():
            raise SettingsError(f"package.{key}: {path} does not exist (relative to {Path.cwd()})")
    registry = Registry(workspace)
    champion = registry.version_with_alias(pipeline.name, CHAMPION)
    if champion is None:
        raise NotReady(f"model {pipeline.name!r} has no champion yet: run the pipeline first")
    key = package_key(champion, serve, monitor, cfg.bentofile, cfg.build_context)
    # Only the newest Bento is reused: an older one built for this key (the champion before a
    # rollback, say) is built again, so that it becomes the one `mlaas serve` picks.
    bento = _latest_bento(pipeline.name)
    if bento is not None and bento.info.labels.get(PACKAGE_KEY_LABEL) == key:
        packaged = Packaged(
            version=champion,
            model_tag=bento.info.labels[MODEL_TAG_LABEL],
            bento_tag=str(bento.tag),
            newly_built=False,
        )
        write_json(packaged, workspace.pipeline(pipeline.name).package_result)
        return packaged

    tags = registry.version_tags(champion.name, champion.version)
    labels = {
        "mlaas.pipeline": pipeline.name,
        "mlaas.version": str(champion.version),
        PACKAGE_KEY_LABEL: key,
    }
    info = ServingInfo(
        name=champion.name,
        version=champion.version,
        alias=CHAMPION,
        model_sha256=tags["mlaas.model_sha256"],
        serve=serve,
        monitor=monitor,
        metrics={
            name: value
            for name, value in registry.run_metrics(champion.run_id).items()
            if name.startswith("test_")
        },
        tags={k: v for k, v in tags.items() if k.startswith("mlaas.") and k != "mlaas.decision"},
    )
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = registry.download_model_dir(champion, Path(scratch) / "model")
        verify_model_dir(model_dir, info.model_sha256)
        manifest: dict[str, Any] = registry.run_json(champion.run_id, MANIFEST_FILE)
        with bentoml.models.create(pipeline.name, labels=labels, metadata={"mlaas": True}) as model:
            target = Path(model.path)
            shutil.copytree(model_dir, target / MODEL_SUBDIR)
            (target / SERVING_FILE).write_text(info.model_dump_json(indent=2) + "\n")
            (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    bento = bentoml.bentos.build_bentofile(
        str(cfg.bentofile),
        build_ctx=str(cfg.build_context),
        name=pipeline.name,
        labels={**labels, MODEL_TAG_LABEL: str(model.tag)},
        args={"model": pipeline.name},
        reload=True,
    )
    packaged = Packaged(
        version=champion, model_tag=str(model.tag), bento_tag=str(bento.tag), newly_built=True
    )
    write_json(packaged, workspace.pipeline(pipeline.name).package_result)
    return packaged
