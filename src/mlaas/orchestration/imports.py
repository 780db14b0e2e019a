"""Which modules of a package a module imports, transitively, read from the source with `ast`.

Nothing is imported: reading a stage's imports must not load MLflow or Lightning. Imports inside
functions count (stage modules import lazily); those under `if TYPE_CHECKING:` do not (they never
run). Importing a submodule runs its parent packages' `__init__.py`, so those count too.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

ImportsOf = Callable[[str], set[str]]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    children: list[ast.AST] = list(ast.iter_child_nodes(node))
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children = list(node.orelse)
    for child in children:
        yield from _import_nodes(child)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a `from … import` names, with a relative one resolved against `module`."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every dotted name the module's imports may load: `from a import b` gives `a` and `a.b`
    (`b` may be a submodule or only an attribute; the caller knows which modules exist)."""
    names: set[str] = set()
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        else:
            base = _absolute(node, module, is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)}


def import_closure(root: str, imports_of: ImportsOf, modules: set[str]) -> set[str]:
    """The modules among `modules` that importing `root` runs, `root` included."""
    found: set[str] = set()
    waiting = [root]
    while waiting:
        for name in (_with_parents(waiting.pop()) & modules) - found:
            found.add(name)
            waiting.extend(imports_of(name))
    return found


def package_modules(folder: Path) -> dict[str, Path]:
    """The package in `folder` (named after it), module name to source file."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_files(roots: tuple[str, ...], package: Path) -> list[Path]:
    """The source files of the package in `package` that importing `roots` runs: the roots' own
    first, then the others in path order."""
    modules = package_modules(package)
    if missing := [root for root in roots if root not in modules]:
        raise ValueError(f"no module {', '.join(missing)} in {package}")

    def imports_of(name: str) -> set[str]:
        path = modules[name]
        return imported_names(path.read_text(), name, is_package=path.name == "__init__.py")

    found = set().union(*(import_closure(root, imports_of, set(modules)) for root in roots))
    return [*(modules[root] for root in roots), *sorted(modules[name] for name in found - {*roots})]
