"""One contract, two registries: the same steps (register versions, move aliases, the champion,
its history, tags, what a run logged) against the in-memory fake and the real MLflow registry on
a temporary SQLite store, so the fake that fast tests use cannot drift from MLflow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mlaas.stores.memory_registry import InMemoryRegistry
from mlaas.stores.model_registry import CHALLENGER, CHAMPION, ModelRegistry, ServedExample
from mlaas.stores.registry import MlflowRegistry
from mlaas.stores.tracking import Tracker
from mlaas.stores.workspace import Workspace

EXAMPLE = ServedExample(
    instances=[[0.0, 1.0]], predictions=[{"label": 1}], instances_schema={"type": "array"}
)
MANIFEST = {"rows": 3, "columns": ["a", "b"]}

# A run as training and evaluation leave it: metrics and a JSON file; answers its id.
MakeRun = Callable[[dict[str, float]], str]


def _fake() -> tuple[ModelRegistry, MakeRun]:
    registry = InMemoryRegistry()
    made: list[str] = []

    def make_run(metrics: dict[str, float]) -> str:
        made.append(f"run-{len(made)}")
        registry.log_run(made[-1], metrics, {"manifest.json": MANIFEST})
        return made[-1]

    return registry, make_run


def _mlflow(home: Path) -> tuple[ModelRegistry, MakeRun]:
    workspace = Workspace(home)
    workspace.ensure_writable(min_free_mb=0)
    tracker = Tracker(workspace)

    def make_run(metrics: dict[str, float]) -> str:
        run_id = tracker.start_run("contract", "run", {}, {})
        tracker.log_metrics(run_id, metrics)
        tracker.log_dict(run_id, MANIFEST, "manifest.json")
        tracker.finish(run_id)
        return run_id

    return MlflowRegistry(workspace), make_run


@pytest.fixture(params=["in-memory", "mlflow"])
def registry_and_runs(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[ModelRegistry, MakeRun]:
    return _fake() if request.param == "in-memory" else _mlflow(tmp_path / "home")


def _model_dir(folder: Path, weights: bytes) -> Path:
    """A model folder as training writes it: named `model` (MLflow keeps that name)."""
    folder = folder / "model"
    (folder / "nested").mkdir(parents=True)
    (folder / "card.json").write_text('{"model": "ridge"}')
    (folder / "nested" / "weights.bin").write_bytes(weights)
    return folder


def test_both_registries_keep_the_same_contract(
    registry_and_runs: tuple[ModelRegistry, MakeRun], tmp_path: Path
) -> None:
    registry, make_run = registry_and_runs
    name = "contract"
    assert not registry.has_model(name)
    assert registry.versions(name) == []
    assert registry.champion(name) is None
    assert registry.version_of_run(name, "no-such-run") is None

    first_run = make_run({"test_accuracy": 0.75})
    second_run = make_run({"test_accuracy": 0.875})
    first = registry.register(
        name, first_run, _model_dir(tmp_path / "m1", b"\x00\x01"), EXAMPLE, {"mlaas.k": "1"}
    )
    second = registry.register(
        name, second_run, _model_dir(tmp_path / "m2", b"\x02"), EXAMPLE, {"mlaas.k": "2"}
    )
    assert (first.name, first.version, first.run_id) == (name, 1, first_run)
    assert (second.version, second.model_uri) == (2, f"models:/{name}/2")
    assert registry.has_model(name)
    assert registry.versions(name) == [1, 2]
    assert registry.version_of_run(name, second_run) == second
    assert registry.version_tags(name, 1) == {"mlaas.k": "1"}

    registry.set_version_tags(name, 1, {"mlaas.decision": "{}", "mlaas.k": "one"})
    registry.delete_version_tag(name, 1, "mlaas.decision")
    assert registry.version_tags(name, 1) == {"mlaas.k": "one"}

    # Aliases: set, moved to another version, removed.
    assert registry.aliases(name) == {}
    registry.set_alias(name, CHAMPION, 1)
    registry.set_alias(name, CHALLENGER, 2)
    assert registry.champion(name) == first
    registry.set_alias(name, CHAMPION, 2)
    assert registry.aliases(name) == {CHAMPION: 2, CHALLENGER: 2}
    assert registry.version_with_alias(name, CHAMPION) == second
    registry.delete_alias(name, CHALLENGER)
    assert registry.aliases(name) == {CHAMPION: 2}
    assert registry.version_with_alias(name, CHALLENGER) is None

    assert registry.champion_history(name) is None
    registry.set_champion_history(name, [1, 2])
    assert registry.champion_history(name) == [1, 2]
    registry.set_champion_history(name, [])
    assert registry.champion_history(name) == []

    # What the version's run logged, and its model folder, byte for byte.
    assert registry.run_metrics(first_run) == {"test_accuracy": 0.75}
    assert registry.run_json(second_run, "manifest.json") == MANIFEST
    copied = registry.download_model_dir(second, tmp_path / "copy")
    assert (copied / "nested" / "weights.bin").read_bytes() == b"\x02"
    assert (copied / "card.json").read_text() == '{"model": "ridge"}'

    # A deleted version takes its aliases with it, and its number is never given again.
    registry.delete_version(name, 2)
    assert registry.versions(name) == [1]
    assert registry.champion(name) is None
    third = registry.register(name, second_run, tmp_path / "m2" / "model", EXAMPLE, {})
    assert third.version == 3
    assert registry.version_of_run(name, second_run) == third
