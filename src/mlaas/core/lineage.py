"""What makes a model traceable: content hashes, the git commit, the lock file, package versions."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

TRACKED_PACKAGES = (
    "mlaas",
    "torch",
    "lightning",
    "scikit-learn",
    "numpy",
    "pandas",
    "pyarrow",
    "great-expectations",
    "mlflow",
    "prefect",
    "bentoml",
    "dvc",
)
LOCK_FILE = Path("constraints.txt")
_CHUNK = 1 << 20


def table_hash(table: pa.Table) -> str:
    """SHA-256 of a table's content in Arrow's stable IPC stream format (schema and values)."""
    digest = hashlib.sha256()

    class _HashSink:
        # Feed IPC bytes straight into the digest: no second copy of the data in memory.
        closed = False

        def write(self, data: bytes) -> int:
            digest.update(data)
            return len(data)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    sink = pa.PythonFile(_HashSink(), mode="w")
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def directory_hash(folder: Path) -> str:
    """SHA-256 over every file's relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(file_hash(path).encode())
    return digest.hexdigest()


def source_hash(package_root: Path) -> str:
    """Hash of the project's Python source: a code change invalidates cached results."""
    digest = hashlib.sha256()
    for path in sorted(package_root.rglob("*.py")):
        digest.update(path.relative_to(package_root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def git_commit(folder: Path | None = None) -> str:
    """The checked-out commit, with `-dirty` when tracked files differ; `unknown` outside git."""
    cwd = folder or Path.cwd()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def lock_file_hash(lock_file: Path = LOCK_FILE) -> str:
    return file_hash(lock_file) if lock_file.is_file() else "missing"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class Lineage(BaseModel):
    """The reproducibility facts of one pipeline run, gathered once at its start."""

    model_config = ConfigDict(frozen=True)

    git_commit: str
    code_version: str
    lock_file: str
    lock_hash: str
    packages: dict[str, str]
    params: dict[str, Any]

    def tags(self) -> dict[str, str]:
        return {
            "mlaas.git_commit": self.git_commit,
            "mlaas.code_version": self.code_version,
            "mlaas.lock_hash": self.lock_hash,
        }


def current_lineage(params: dict[str, Any], project_root: Path | None = None) -> Lineage:
    root = project_root or Path.cwd()
    package_root = Path(__file__).resolve().parents[1]
    return Lineage(
        git_commit=git_commit(root),
        code_version=source_hash(package_root),
        lock_file=str(LOCK_FILE),
        lock_hash=lock_file_hash(root / LOCK_FILE),
        packages=package_versions(),
        params=params,
    )
