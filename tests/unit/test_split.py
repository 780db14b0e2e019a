import numpy as np
import pyarrow as pa

from mlaas.core.settings import SplitSettings
from mlaas.stages.split import split_table


def _table(rows: int = 1000) -> pa.Table:
    labels = np.repeat([0, 1, 2, 3], rows // 4)
    return pa.table({"row": np.arange(rows), "label": labels})


def test_split_is_disjoint_complete_and_sized() -> None:
    splits = split_table(_table(), "label", SplitSettings(test_size=0.1, val_size=0.2), seed=1)
    parts = [
        set(part.column("row").to_pylist()) for part in (splits.train, splits.val, splits.test)
    ]
    assert sum(len(p) for p in parts) == 1000
    assert set.union(*parts) == set(range(1000))
    assert len(parts[2]) == 100 and len(parts[1]) == 200


def test_split_keeps_class_proportions() -> None:
    splits = split_table(_table(), "label", SplitSettings(), seed=3)
    for part in (splits.train, splits.val, splits.test):
        counts = np.bincount(part.column("label").to_numpy())
        assert counts.max() - counts.min() <= 1


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    first = split_table(_table(), "label", SplitSettings(), seed=7)
    again = split_table(_table(), "label", SplitSettings(), seed=7)
    other = split_table(_table(), "label", SplitSettings(), seed=8)
    assert first.test.equals(again.test)
    assert not first.test.equals(other.test)


def test_sampling_keeps_proportions_and_is_seeded() -> None:
    from mlaas.stages.load import sample_rows

    table = _table()
    sample = sample_rows(table, "label", rows=100, seed=0)
    assert sample.num_rows == 100
    assert np.bincount(sample.column("label").to_numpy()).tolist() == [25, 25, 25, 25]
    assert sample.equals(sample_rows(table, "label", rows=100, seed=0))
    assert sample_rows(table, "label", rows=5000, seed=0).equals(table)
    assert sample_rows(table, None, rows=100, seed=0).num_rows == 100


def test_an_unstratified_split_is_still_disjoint_and_seeded() -> None:
    splits = split_table(_table(), None, SplitSettings(), seed=4)
    again = split_table(_table(), None, SplitSettings(), seed=4)
    assert splits.test.equals(again.test)
    rows = [set(p.column("row").to_pylist()) for p in (splits.train, splits.val, splits.test)]
    assert sum(len(r) for r in rows) == 1000 and len(set.union(*rows)) == 1000
