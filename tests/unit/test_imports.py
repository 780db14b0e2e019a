"""A module's imports read from its source: lazy ones count, type-checking ones do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas.orchestration.imports import imported_files, imported_names

PACKAGE = {
    "__init__.py": "",
    "stage.py": "from pkg import direct\n\ndef run():\n    from .sub import lazy\n",
    "direct.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import typed\n"
        "else:\n    import pkg.untyped\n"
    ),
    "typed.py": "",
    "untyped.py": "",
    "unused.py": "",
    "sub/__init__.py": "from ..direct import NAME\n",
    "sub/lazy.py": "import os\n",
}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    for name, source in PACKAGE.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(source)
    return tmp_path / "pkg"


def test_a_stage_needs_what_it_imports_lazily_and_the_packages_around_it(package: Path) -> None:
    found = imported_files(("pkg.stage",), package)
    names = [path.relative_to(package).as_posix() for path in found]
    assert names == [
        "stage.py",
        "__init__.py",
        "direct.py",
        "sub/__init__.py",
        "sub/lazy.py",
        "untyped.py",
    ]


def test_a_second_root_adds_its_own_imports(package: Path) -> None:
    found = imported_files(("pkg.direct", "pkg.unused"), package)
    assert [path.name for path in found] == ["direct.py", "unused.py", "__init__.py", "untyped.py"]


def test_a_root_that_is_not_in_the_package_is_named(package: Path) -> None:
    with pytest.raises(ValueError, match=r"pkg\.gone"):
        imported_files(("pkg.gone",), package)


@pytest.mark.parametrize(
    ("source", "module", "is_package", "names"),
    [
        ("from . import a", "p.q.m", False, {"p.q", "p.q.a"}),
        ("from .. import a", "p.q.m", False, {"p", "p.a"}),
        ("from .a import b", "p.q", True, {"p.q.a", "p.q.a.b"}),
        ("from ..a import *", "p.q.r", True, {"p.q.a"}),
        ("import p.q as alias", "x", False, {"p.q"}),
    ],
)
def test_relative_imports_resolve_against_the_importing_module(
    source: str, module: str, is_package: bool, names: set[str]
) -> None:
    assert imported_names(source, module, is_package) == names
