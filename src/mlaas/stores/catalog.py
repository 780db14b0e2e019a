"""The platform's pipelines: one entry per pipeline under `$MLAAS_HOME/catalog/`.

    catalog/NAME.json          where its params file is, who added it (`up` or `api`), when
    catalog/NAME/params.yaml   for a pipeline created over the API: its params, as validated
    catalog/NAME/request.json  and the document the client sent (what `GET /pipelines` shows)

`mlaas up` adds the params files it was given (pointing at them where they are, so paths in
them keep meaning what they meant); the API adds the pipelines it creates. The deployments'
runner serves a deployment for every entry, the control API and `mlaas status` list them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from mlaas.core.errors import Conflict, NotFound
from mlaas.stores.files import write_whole
from mlaas.stores.locks import workspace_lock
from mlaas.stores.workspace import Workspace


class CatalogEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    params: str
    """The params file the pipeline's runs read (absolute)."""
    added_by: Literal["up", "api"]
    added_at: str


class Catalog:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.folder = workspace.catalog_dir

    def _entry_path(self, name: str) -> Path:
        self.workspace.pipeline(name)  # refuses a name that would leave the folder
        return self.folder / f"{name}.json"

    def find(self, name: str) -> CatalogEntry | None:
        try:
            return CatalogEntry.model_validate_json(self._entry_path(name).read_text())
        except FileNotFoundError:
            return None

    def get(self, name: str) -> CatalogEntry:
        entry = self.find(name)
        if entry is None:
            known = ", ".join(self.names()) or "none yet"
            raise NotFound(f"no pipeline {name!r} on this platform (pipelines: {known})")
        return entry

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.stem for path in self.folder.glob("*.json"))

    def entries(self) -> list[CatalogEntry]:
        found = (self.find(name) for name in self.names())
        return [entry for entry in found if entry is not None]

    def sync_files(self, deployed: dict[str, Path]) -> None:
        """Make the entries `mlaas up` added the pipelines it deploys now (name -> params file):
        add or re-point those, drop the ones it no longer deploys."""
        for name, params in deployed.items():
            self.add_file(name, params)
        for entry in self.entries():
            if entry.added_by == "up" and entry.name not in deployed:
                self._entry_path(entry.name).unlink(missing_ok=True)

    def add_file(self, name: str, params: Path) -> CatalogEntry:
        """Record (or re-point) a pipeline `mlaas up` deploys from a params file of the user's."""
        entry = CatalogEntry(
            name=name, params=str(params.resolve()), added_by="up", added_at=_now()
        )
        existing = self.find(name)
        if existing is not None and existing.added_by == "api":
            raise Conflict(
                f"pipeline {name!r} was created over the API; give this params file another "
                "pipeline.name"
            )
        if existing is None or existing.params != entry.params:
            write_whole(self._entry_path(name), entry.model_dump_json(indent=2))
        return entry if existing is None or existing.params != entry.params else existing

    def create(self, name: str, params: dict[str, Any], request: dict[str, Any]) -> CatalogEntry:
        """Add a pipeline created over the API: its params file first, its entry last (an entry
        always names a complete file); a name already taken is a Conflict."""
        # Two creations of one name at once: the second sees the first's entry.
        with workspace_lock(self.workspace, "catalog", "adding a pipeline to the catalog", 60):
            return self._create(name, params, request)

    def _create(self, name: str, params: dict[str, Any], request: dict[str, Any]) -> CatalogEntry:
        if self.find(name) is not None:
            raise Conflict(f"pipeline.name: a pipeline named {name!r} exists; choose another name")
        params_file = self.params_file(name)
        params_file.parent.mkdir(parents=True, exist_ok=True)
        write_whole(params_file, yaml.safe_dump(params, sort_keys=False))
        write_whole(params_file.parent / "request.json", json.dumps(request, indent=2))
        entry = CatalogEntry(name=name, params=str(params_file), added_by="api", added_at=_now())
        write_whole(self._entry_path(name), entry.model_dump_json(indent=2))
        return entry

    def params_file(self, name: str) -> Path:
        """Where the params of a pipeline created over the API are kept."""
        self._entry_path(name)  # refuses a name that would leave the folder
        return self.folder / name / "params.yaml"

    def request(self, name: str) -> dict[str, Any] | None:
        """The document a pipeline created over the API was created from."""
        path = self.folder / name / "request.json"
        return json.loads(path.read_text()) if path.is_file() else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
