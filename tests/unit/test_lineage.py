from pathlib import Path

import numpy as np
import pyarrow as pa

from mlaas.core.lineage import directory_hash, git_commit, table_hash


def test_table_hash_follows_content_only() -> None:
    table = pa.table({"x": np.arange(10), "label": list("abcdeabcde")})
    same = pa.table({"x": np.arange(10), "label": list("abcdeabcde")})
    changed = pa.table({"x": np.arange(10), "label": list("abcdeabcdf")})
    assert table_hash(table) == table_hash(same)
    assert table_hash(table) != table_hash(changed)


def test_directory_hash_sees_a_single_changed_byte(tmp_path: Path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"\x00" * 100)
    (tmp_path / "card.json").write_text("{}")
    before = directory_hash(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"\x00" * 99 + b"\x01")
    assert directory_hash(tmp_path) != before


def test_git_commit_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"
