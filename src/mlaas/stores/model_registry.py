"""What a model registry is to mlaas: the few operations the stages, rollback, `mlaas compare`
and packaging use, as a protocol. `MlflowRegistry` (mlaas.stores.registry) is the real one, for
any MLflow store (a SQLite file, PostgreSQL, a tracking server); `InMemoryRegistry`
(mlaas.stores.memory_registry) is a fake for fast tests. Free of MLflow imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlaas.core.records import ModelVersionRef

CHAMPION = "champion"
CHALLENGER = "challenger"
# MLflow's error codes when its store works but holds no such model (RESOURCE_DOES_NOT_EXIST)
# or alias (INVALID_PARAMETER_VALUE): "none", where any other error means "cannot tell".
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


@dataclass(frozen=True)
class ServedExample:
    """A few instances as a client sends them, the predictions the model gives for them, and
    the JSON schema of an instances list."""

    instances: list[Any]
    predictions: list[dict[str, Any]]
    instances_schema: dict[str, Any]


class ModelRegistry(Protocol):
    """Registered models by name: numbered versions with tags, aliases pointing at versions
    (champion, challenger), the champion history rollback undoes, and what each version's run
    logged (its metrics, JSON files and model folder)."""

    def register(
        self,
        name: str,
        run_id: str,
        model_dir: Path,
        example: ServedExample,
        tags: Mapping[str, str],
    ) -> ModelVersionRef:
        """A new version of `name` holding `model_dir`, logged with the run `run_id`."""
        ...

    def version_of_run(self, name: str, run_id: str) -> ModelVersionRef | None:
        """The version already registered from this run (the oldest, if several)."""
        ...

    def has_model(self, name: str) -> bool: ...

    def versions(self, name: str) -> list[int]:
        """The version numbers of `name` that exist, ascending (a deleted one's number is
        never reused)."""
        ...

    def delete_version(self, name: str, version: int) -> None: ...

    def version_tags(self, name: str, version: int) -> dict[str, str]: ...

    def set_version_tags(self, name: str, version: int, tags: Mapping[str, str]) -> None: ...

    def delete_version_tag(self, name: str, version: int, key: str) -> None: ...

    def champion(self, name: str) -> ModelVersionRef | None:
        """The version the champion alias points at; None before there is one."""
        ...

    def version_with_alias(self, name: str, alias: str) -> ModelVersionRef | None: ...

    def aliases(self, name: str) -> dict[str, int]:
        """Each alias of `name` and the version it points at."""
        ...

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point `alias` at `version` (moving it from the version it pointed at)."""
        ...

    def delete_alias(self, name: str, alias: str) -> None: ...

    def champion_history(self, name: str) -> list[int] | None:
        """The versions that became champion, oldest first; None where it was never recorded."""
        ...

    def set_champion_history(self, name: str, history: list[int]) -> None: ...

    def run_metrics(self, run_id: str) -> dict[str, float]: ...

    def run_json(self, run_id: str, artifact_path: str) -> dict[str, Any]:
        """A JSON file logged with a run (the manifest, say)."""
        ...

    def download_model_dir(self, ref: ModelVersionRef, destination: Path) -> Path:
        """Copy the version's model folder (card and weights) to `destination`."""
        ...
