"""Benchmark 7: the Great Expectations gate against vectorised pandas checks of the same rules.

The rules are the real suites: the default data's (MNIST's: shape, pixel range, finiteness,
labels, balance, on the gate's per-image frame) and, beside it, breast_cancer's tabular suite
(127 expectations: learned ranges, nulls, types, duplicates, labels). Frames are synthetic
replicas of the real ones (numbers jittered, so rows stay distinct) at 10^5 and 10^6 rows, plus
the fixed cost at 100 rows. The pandas side interprets the very same expectation objects.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import Comparison, save
from mlaas.core.settings import LoadSettings, ValidateSettings
from mlaas.families.base import Family
from mlaas.families.image import ImageFamily
from mlaas.families.tabular import NUMERIC_TYPES, TabularFamily
from mlaas.stages.validate import check_frame


def replicate(frame: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` rows drawn from the frame, decimals shrunk by up to 0.3% so rows stay distinct
    (towards zero: values stay inside their valid ranges)."""
    rng = np.random.default_rng(seed)
    sample = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    numbers = sample.select_dtypes("float").columns.difference(["label_share"])
    shrink = 1 - np.abs(rng.normal(0, 0.001, (rows, len(numbers))))
    sample[numbers] = sample[numbers] * shrink
    return sample


def pandas_check(frame: pd.DataFrame, expectation: Any) -> bool:
    """One GX expectation, evaluated with vectorised pandas."""
    kind = type(expectation).__name__
    get = expectation.configuration.kwargs  # GX expectations are pydantic v1 models
    column = get.get("column")
    mostly = get.get("mostly") or 1.0
    if kind == "ExpectTableRowCountToBeBetween":
        return len(frame) >= (get.get("min_value") or 0)
    if kind == "ExpectColumnToExist":
        return column in frame.columns
    values = frame[column] if column in frame.columns else None
    if kind == "ExpectCompoundColumnsToBeUnique":
        return float((~frame[get["column_list"]].duplicated(keep=False)).mean()) >= mostly
    if values is None:
        raise ValueError(f"{kind} names column {column!r}, which the frame does not have")
    present = values.dropna()
    if kind == "ExpectColumnValuesToNotBeNull":
        return float(values.notna().mean()) >= mostly
    if kind == "ExpectColumnValuesToBeInTypeList":
        return values.dtype.name in NUMERIC_TYPES
    if kind == "ExpectColumnValuesToBeBetween":
        low, high = get.get("min_value"), get.get("max_value")
        inside = pd.Series(True, index=present.index)
        if low is not None:
            inside &= present >= low
        if high is not None:
            inside &= present <= high
        return float(inside.mean()) >= mostly if len(present) else True
    if kind == "ExpectColumnValuesToBeInSet":
        return float(present.isin(get["value_set"]).mean()) >= mostly if len(present) else True
    if kind == "ExpectColumnDistinctValuesToEqualSet":
        return set(present.unique()) == set(get["value_set"])
    raise NotImplementedError(kind)


def validation_throughput(quick: bool) -> list[Comparison]:
    cases: list[tuple[str, Family, LoadSettings]] = [
        ("mnist", ImageFamily(), LoadSettings(source="mnist"))
    ]
    if not quick:
        cases.append(("breast_cancer", TabularFamily(), LoadSettings(source="breast_cancer")))
    cfg = ValidateSettings(min_rows=10)
    scratch = Path(tempfile.mkdtemp(prefix="mlaas-bench-"))
    sizes = [100, 100_000] if quick else [100, 100_000, 1_000_000]
    rounds = 2 if quick else 5
    comparisons = []
    for data, family, load in cases:
        base = family.validation_frame(family.load(load), load)
        reference = family.reference_profile(base, load)
        for rows in sizes:
            frame = replicate(base, rows)
            if "label_share" in frame.columns:  # a share of the whole, not of a row's copy
                labels = frame[family.target_column(load)]
                frame["label_share"] = labels.map(labels.value_counts(normalize=True))
            suite = family.expectations(frame, load, cfg, reference)
            gx_times, pandas_times = [], []
            for round_index in range(rounds + 1):
                started = time.perf_counter()
                passed_pandas = all(pandas_check(frame, e) for e in suite)
                pandas_time = time.perf_counter() - started
                started = time.perf_counter()
                passed_gx, _ = check_frame(frame, suite, "bench", scratch)
                gx_time = time.perf_counter() - started
                if passed_gx != passed_pandas:
                    raise RuntimeError(
                        f"{data} ({rows} rows): GX says {passed_gx}, the pandas rules "
                        f"{passed_pandas}: the two checks differ, so their times compare nothing"
                    )
                if round_index:  # the first round warms imports and caches
                    gx_times.append(gx_time)
                    pandas_times.append(pandas_time)
            comparison = Comparison(
                name=f"validation_{data}_{rows}",
                a_label="vectorised pandas, same rules",
                b_label=f"Great Expectations gate (mlaas validate), {len(suite)} expectations",
                unit="s per validation",
                a_samples=pandas_times,
                b_samples=gx_times,
                target="≤ 200 ms at 100 rows" if rows <= 100 else "≥ 1M rows/s and ≤ 5× pandas",
                met=None,
                extra={"rows": rows, "expectations": len(suite), "passed": passed_gx},
            )
            rate = rows / comparison.b_median
            comparison.extra["gx_rows_per_second"] = rate
            comparison.met = (
                comparison.b_median <= 0.2 if rows <= 100 else rate >= 1e6 and comparison.ratio <= 5
            )
            save(comparison, quick)
            comparisons.append(comparison)
    shutil.rmtree(scratch, ignore_errors=True)
    return comparisons
