"""`mlaas compare` marks each run with the aliases of its version, champion first; it reads
the registry through the `ModelRegistry` protocol, so the in-memory fake stands in here."""

from __future__ import annotations

from pathlib import Path

from mlaas.cli.compare import aliases_by_run
from mlaas.stores.memory_registry import InMemoryRegistry
from mlaas.stores.model_registry import CHALLENGER, CHAMPION, ServedExample

EXAMPLE = ServedExample(instances=[], predictions=[], instances_schema={})


def test_each_run_gets_the_aliases_of_its_version_champion_first(tmp_path: Path) -> None:
    registry = InMemoryRegistry()
    assert aliases_by_run(registry, "digits") == {}  # trained, never registered
    (tmp_path / "model").mkdir()
    for run in ("run-a", "run-b", "run-c"):
        registry.register("digits", run, tmp_path / "model", EXAMPLE, {})
    registry.set_alias("digits", "best-by-hand", 2)
    registry.set_alias("digits", CHALLENGER, 2)
    registry.set_alias("digits", CHAMPION, 2)
    registry.set_alias("digits", "audit", 1)
    assert aliases_by_run(registry, "digits") == {
        "run-b": (CHAMPION, CHALLENGER, "best-by-hand"),
        "run-a": ("audit",),
    }
