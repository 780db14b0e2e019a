"""Write `src/serving-requirements.txt` (in the Bento's build context): the packages a served
Bento imports and everything they need, each pinned as `constraints.txt` pins it. The Bento
installs exactly this set (`bentofile.yaml`'s `requirements_txt`);
`tests/unit/test_project_files.py` fails when the committed file differs from what this writes.

python scripts/serving_lock.py            write it
python scripts/serving_lock.py --check    only say whether it is current
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "src" / "serving-requirements.txt"
# What `mlaas.serving.service` and the models it loads import (torch for networks, scikit-learn
# and skops for pipelines, transformers for MiniLM and word pieces).
SERVING_ROOTS = (
    "bentoml",
    "torch",
    "fastapi",
    "numpy",
    "pandas",
    "pyarrow",
    "pydantic",
    "orjson",
    "pyyaml",
    "scikit-learn",
    "skops",
    "transformers",
    "tokenizers",
    "safetensors",
    # uvicorn's fast HTTP parser and event loop, which it picks up when installed (the peers
    # benchmark: bare requests/s 2-5x those of its pure-Python fallbacks).
    "httptools",
    "uvloop",
)
HEADER = (
    "# The served Bento's whole dependency set, pinned as constraints.txt pins it (torch without\n"
    "# its local `+cpu` tag: an image picks its own wheel). Generated: "
    "`python scripts/serving_lock.py`.\n"
)


def pins(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            found[canonicalize_name(name)] = version.strip()
    return found


def closure(roots: tuple[str, ...]) -> set[str]:
    """The roots and, transitively, what their installed metadata requires (no extras)."""
    seen: set[str] = set()
    waiting = [canonicalize_name(root) for root in roots]
    while waiting:
        name = waiting.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                waiting.append(canonicalize_name(requirement.name))
    return seen


def lock_text() -> str:
    locked = pins((ROOT / "constraints.txt").read_text().splitlines())
    names = sorted(closure(SERVING_ROOTS) & set(locked))
    return HEADER + "".join(f"{name}=={locked[name].split('+')[0]}\n" for name in names)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python scripts/serving_lock.py")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = LOCK.is_file() and LOCK.read_text() == lock_text()
    if args.check:
        print(f"{LOCK.name} is {'current' if current else 'out of date'}")
        return 0 if current else 1
    LOCK.write_text(lock_text())
    print(f"wrote {LOCK.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
