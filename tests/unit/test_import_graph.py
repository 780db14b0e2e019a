"""No import cycle among mlaas's modules.

Imports inside functions count: a lazy import defers the cost of a module, not the dependency
on it (the cycle models -> families -> tabular -> models ran through two of them). Imports under
`if TYPE_CHECKING:` do not: they never run. A package's `__init__` importing its own submodules
is no cycle either: a module depends on what it names, not on the parents Python runs first.
"""

from __future__ import annotations

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
