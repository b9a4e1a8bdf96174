"""Exact duplicate rows of ``timeseries.parquet``: kept, counted once, one warning at fit (audit finding 5)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import clinfuse.datasets.timeseries as ts_module
from clinfuse.datasets.timeseries import TimeseriesReader

KEY = ["patient_id", "time", "variable", "value"]


def _labs() -> pd.DataFrame:
    """Three patients; at each time several labs, not sorted by variable."""
    rows = [("a", 0.0, "sbp", 120.0), ("a", 0.0, "hr", 80.0), ("a", 1.0, "hr", 82.0),
            ("b", 0.0, "lact", 1.5), ("b", 0.0, "hr", 90.0), ("b", 2.0, "hr", 91.0),
            ("c", 5.0, "hr", 70.0), ("c", 5.0, "sbp", 110.0), ("c", 6.0, "hr", 71.0)]
    return pd.DataFrame(rows, columns=KEY)


def _fit(root, train=("a", "b", "c")) -> tuple[TimeseriesReader, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = TimeseriesReader(root, max_events=10**6).fit(list(train))
    return reader, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_duplicates_warn_once_naming_file_count_and_patients(tmp_path):
    df = _labs()
    # b's hr at 0 twice more (one not adjacent to it in the file), c's sbp at 5 once more
    dups = pd.concat([df, df.iloc[[4, 4, 7]]]).sample(frac=1.0, random_state=0)
    dups.to_parquet(tmp_path / "timeseries.parquet", index=False)
    reader, messages = _fit(tmp_path)
    assert len(messages) == 1
    msg = messages[0]
    assert str(tmp_path / "timeseries.parquet") in msg
    assert "3 row(s)" in msg and "2 patient(s)" in msg and "'b'" in msg and "'c'" in msg and "'a'" not in msg
    assert "separate measurements" in msg and 'drop_duplicates(["patient_id", "time", "variable", "value"])' in msg
    # documented behaviour kept: every row is a measurement
    assert len(reader.get("b")["times"]) == 5 and len(reader.get("c")["times"]) == 4


@pytest.mark.parametrize("change", ["time", "value", "variable", "patient_id"])
def test_rows_differing_in_one_column_are_not_duplicates(tmp_path, change):
    df = _labs()
    extra = df.iloc[[1]].copy()
    extra[change] = {"time": 0.5, "value": 81.0, "variable": "lact", "patient_id": "b"}[change]
    pd.concat([df, extra]).to_parquet(tmp_path / "timeseries.parquet", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TimeseriesReader(tmp_path).fit(["a", "b", "c"])


def _random_table(seed: int, n: int = 400) -> pd.DataFrame:
    """Many ties in (patient, time), few values: plenty of exact duplicates, some 0.0 / -0.0."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "patient_id": rng.choice(["p1", "p2", "p3", "p4", "p5"], n),
        "time": rng.integers(0, 4, n).astype(float),
        "variable": rng.choice(["hr", "sbp", "lact"], n),
        "value": rng.choice([0.0, -0.0, 1.0, 2.5, 7.0], n),
    })


def _count(reader: TimeseriesReader, rows: int) -> tuple[int, set[str]]:
    counter = ts_module._DuplicateRows(len(reader._store.patients))
    for chunk in reader._store.chunks("patient", "time", "code", "value", rows=rows):
        counter.update(*chunk)
    counter.finish()
    return counter.count, {reader._store.patients[i].decode() for i in np.flatnonzero(counter.patients)}


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 64, 1 << 16])  # runs spanning one, two, many chunks
@pytest.mark.parametrize("seed", [0, 1])
def test_count_matches_pandas_across_chunk_boundaries(tmp_path, rows, seed):
    df = _random_table(seed)
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    reader = TimeseriesReader(tmp_path)
    want = df.duplicated(KEY)
    assert want.sum() > 50  # the table does exercise the check
    assert _count(reader, rows) == (int(want.sum()), set(df.loc[want, "patient_id"]))


def test_synthetic_cohort_has_no_duplicate_or_case_warning(synthetic_cohort):
    ids = pd.read_csv(synthetic_cohort / "splits.csv", dtype={"patient_id": str})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TimeseriesReader(synthetic_cohort).fit(ids.loc[ids["split"] == "train", "patient_id"].tolist())
