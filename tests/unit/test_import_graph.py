"""No import cycle among mlaas's modules.

Imports inside functions count: a lazy import defers the cost of a module, not the dependency
on it (the cycle models -> families -> tabular -> models ran through two of them). Imports under
`if TYPE_CHECKING:` do not: they never run. A package's `__init__` importing its own submodules
is no cycle either: a module depends on what it names, not on the parents Python runs first.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import mlaas
from mlaas.orchestration.imports import imported_names, package_modules


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of the package, and the modules of the package it imports."""
    modules = package_modules(package)
    return {
        name: (
            imported_names(path.read_text(), name, is_package=path.name == "__init__.py")
            & modules.keys()
        )
        - {name}
        for name, path in modules.items()
    }


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph, each module importing the next, the first repeated at the end;
    empty when there is none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        # graphlib lists each node before the nodes that depend on it: the importers.
        return list(reversed(error.args[1]))
    return []


def test_the_checker_sees_a_cycle_through_a_function_but_not_through_type_checking(
    tmp_path: Path,
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg import a\n")
    (package / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (package / "b.py").write_text("from pkg.a import f\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import x\n"
    )
    (package / "d.py").write_text("from pkg.c import y\n")

    cycle = import_cycle(import_graph(package))

    assert cycle in (["pkg.a", "pkg.b", "pkg.a"], ["pkg.b", "pkg.a", "pkg.b"]), cycle


def test_mlaas_has_no_import_cycle() -> None:
    cycle = import_cycle(import_graph(Path(mlaas.__file__).parent))

    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_a_run_process_loads_lightning_only_when_it_fits_a_network() -> None:
    """Lightning is a third of the imports of a run's process: a pipeline of scikit-learn
    models trains in that process, and never needs it (networks train in a process of their
    own, `mlaas.modeling.train_worker`)."""
    probe = (
        "import mlaas.orchestration.flow, mlaas.orchestration.monitor_flow\n"
        "import mlaas.stages.table\n"
    )
    assert loaded_packages(probe, {"lightning"}) == []


# One card per family, as small as its `inputs` allow: what the service module reads at import.
PROBE_CARDS = {
    "image": {"task": "classification", "model": {"name": "cnn"}, "classes": [0, 1],
              "inputs": {"shape": [8, 8]}},
    "tabular": {"task": "classification", "model": {"name": "logistic_regression"},
                "classes": [0, 1], "inputs": {"features": {"a": "number", "b": "category"}}},
    "text": {"task": "classification", "model": {"name": "tfidf_linear"},
             "classes": ["a", "b"], "inputs": {"max_chars": 100}},
    "recommendation": {"task": "rating", "model": {"name": "matrix_factorization"},
                       "inputs": {}},
}  # fmt: skip


def test_the_model_servers_leader_builds_its_api_without_torch_or_scikit_learn() -> None:
    """BentoML's leader process imports the service module only to read its configuration and
    API, then starts the workers that load the model: torch and scikit-learn there were two of
    the three seconds before it listened (`serve_cold_start` in BENCHMARKS.md). The probe
    imports what the service module imports at its top level and builds every family's
    instance schema from a card, as the module does."""
    from mlaas.families import OUTLINES

    assert set(PROBE_CARDS) == set(OUTLINES)
    service = Path(mlaas.__file__).parent / "serving" / "service.py"
    top_level = sorted(
        node.module
        for node in ast.parse(service.read_text()).body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlaas.")
    )
    assert "mlaas.families" in top_level and "mlaas.serving.hot_swap" in top_level, top_level
    probe = (
        "import importlib\n"
        "from pydantic import TypeAdapter\n"
        f"for name in {top_level!r}: importlib.import_module(name)\n"
        "from mlaas.core.model_card import ModelCard\n"
        "from mlaas.families import get_family\n"
        f"for family, fields in {PROBE_CARDS!r}.items():\n"
        "    card = ModelCard(family=family, dataset='d', target='y', **fields)\n"
        "    TypeAdapter(get_family(family).instance_type(card)).json_schema()\n"
    )
    heavy = {"torch", "sklearn", "lightning", "mlflow", "great_expectations", "prefect"}
    assert loaded_packages(probe, heavy) == []


def test_the_flow_imports_a_stage_only_when_its_task_runs() -> None:
    """A run with nothing changed has every training stage as a cache hit: the flow module
    itself must not import what those stages need (GX, torch, scikit-learn, Lightning, Optuna
    were three of the five seconds of its imports)."""
    probe = "import flows.training_pipeline\n"
    heavy = {"torch", "sklearn", "lightning", "great_expectations", "optuna", "bentoml"}
    assert loaded_packages(probe, heavy) == []


def loaded_packages(probe: str, packages: set[str]) -> list[str]:
    """Which of `packages` a fresh interpreter has imported once it ran `probe` (in the project
    folder, where `flows` is)."""
    import subprocess
    import sys

    report = "import sys\nprint(sorted({m.split('.')[0] for m in sys.modules} & %r))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", probe + report % packages],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=Path(mlaas.__file__).parents[2],
    )
    return list(ast.literal_eval(loaded.stdout.strip()))
