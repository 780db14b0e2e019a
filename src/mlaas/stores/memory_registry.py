"""A model registry held in memory: the `ModelRegistry` protocol without MLflow, so tests of
promotion and rollback take milliseconds.

It lives beside the real one, not under tests/, so that mypy checks it against the protocol
with the rest of the package, and the contract test in tests/unit/test_registry_contract.py
runs the same steps against both (the fake cannot drift from MLflow's behaviour unnoticed).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlaas.core.records import ModelVersionRef
from mlaas.stores.model_registry import CHAMPION, ServedExample


@dataclass
class _Version:
    run_id: str
    files: dict[str, bytes]
    tags: dict[str, str]


@dataclass
class _Model:
    versions: dict[int, _Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    last_version: int = 0
    history: list[int] | None = None


@dataclass
class _Run:
    metrics: dict[str, float]
    files: dict[str, Any]


class InMemoryRegistry:
    """Registered models, versions, aliases and the runs they came from, in dictionaries.

    Runs are not made by a registry: a test records what each run logged with `log_run` first.
    Asking for a model, version or run that does not exist raises KeyError (MLflow raises its
    own exception there); the lookups that answer None in MLflow answer None here too.
    """

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._runs: dict[str, _Run] = {}

    def log_run(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a run's metrics and JSON files (by artifact path), as training logs them."""
        self._runs[run_id] = _Run(dict(metrics or {}), dict(files or {}))

    def _ref(self, name: str, version: int) -> ModelVersionRef:
        return ModelVersionRef(
            name=name,
            version=version,
            run_id=self._models[name].versions[version].run_id,
            model_uri=f"models:/{name}/{version}",
        )

    def _version(self, name: str, version: int) -> _Version:
        return self._models[name].versions[version]

    def register(
        self,
        name: str,
        run_id: str,
        model_dir: Path,
        example: ServedExample,
        tags: Mapping[str, str],
    ) -> ModelVersionRef:
        model = self._models.setdefault(name, _Model())
        files = {
            str(path.relative_to(model_dir)): path.read_bytes()
            for path in sorted(model_dir.rglob("*"))
            if path.is_file()
        }
        model.last_version += 1
        model.versions[model.last_version] = _Version(run_id, files, dict(tags))
        return self._ref(name, model.last_version)

    def version_of_run(self, name: str, run_id: str) -> ModelVersionRef | None:
        versions = self._models[name].versions if name in self._models else {}
        found = [number for number, entry in versions.items() if entry.run_id == run_id]
        return self._ref(name, min(found)) if found else None

    def has_model(self, name: str) -> bool:
        return name in self._models

    def versions(self, name: str) -> list[int]:
        model = self._models.get(name)
        return sorted(model.versions) if model else []

    def delete_version(self, name: str, version: int) -> None:
        model = self._models[name]
        del model.versions[version]
        # As in MLflow: the aliases of a deleted version go with it.
        model.aliases = {a: v for a, v in model.aliases.items() if v != version}

    def version_tags(self, name: str, version: int) -> dict[str, str]:
        return dict(self._version(name, version).tags)

    def set_version_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None:
        self._version(name, version).tags.update(tags)

    def delete_version_tag(self, name: str, version: int, key: str) -> None:
        self._version(name, version).tags.pop(key, None)

    def champion(self, name: str) -> ModelVersionRef | None:
        return self.version_with_alias(name, CHAMPION)

    def version_with_alias(self, name: str, alias: str) -> ModelVersionRef | None:
        model = self._models.get(name)
        if model is None or alias not in model.aliases:
            return None
        return self._ref(name, model.aliases[alias])

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self._models[name].aliases)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self._version(name, version)  # refuses a version that does not exist, as MLflow does
        self._models[name].aliases[alias] = version

    def delete_alias(self, name: str, alias: str) -> None:
        self._models[name].aliases.pop(alias, None)

    def champion_history(self, name: str) -> list[int] | None:
        history = self._models[name].history
        return None if history is None else list(history)

    def set_champion_history(self, name: str, history: list[int]) -> None:
        self._models[name].history = list(history)

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self._runs[run_id].metrics)

    def run_json(self, run_id: str, artifact_path: str) -> dict[str, Any]:
        # A copy through JSON, as a download would give: the caller cannot change the record.
        return dict(json.loads(json.dumps(self._runs[run_id].files[artifact_path])))

    def download_model_dir(self, ref: ModelVersionRef, destination: Path) -> Path:
        shutil.rmtree(destination, ignore_errors=True)
        for relative, content in self._version(ref.name, ref.version).files.items():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        destination.mkdir(parents=True, exist_ok=True)
        return destination
