"""Levels and variable names differing only in case or whitespace: kept apart, one warning at fit
(audit finding 6)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from clinfuse.datasets.reader import case_collisions
from clinfuse.datasets.tabular import TabularReader
from clinfuse.datasets.timeseries import TimeseriesReader

IDS = [f"p{i}" for i in range(8)]


def _user_warnings(fit) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit()
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_case_collisions_groups():
    values = ["F", "f", "Female ", "Female", "M ", "M", "male", "Other", " "]
    assert case_collisions(values) == [["F", "f"], ["Female", "Female "], ["M", "M "]]
    assert case_collisions(["Straße", "STRASSE"]) == [["STRASSE", "Straße"]]  # casefold, not lower
    assert case_collisions(["a", "b", "A1"]) == []


@pytest.mark.parametrize("dtype", ["string", "object", "category"])
def test_tabular_warns_once_per_colliding_column(tmp_path, dtype):
    df = pd.DataFrame({
        "patient_id": IDS,
        "sex": pd.Series(["F", "f", "Female ", "Female", "M ", "M", "F", None], dtype=dtype),
        "ward": pd.Series(["icu", "ward", "ed", "icu", "ward", "icu", "ed", "icu"], dtype=dtype),
        "admission": pd.Series(["EMERGENCY", "Emergency", "elective", "EMERGENCY", "urgent", "x", "y", "z"], dtype=dtype),
        "age": [60.0, 70.0, 50.0, 80.0, 40.0, 65.0, 30.0, 90.0],
    })
    df.to_parquet(tmp_path / "tabular.parquet", index=False)
    reader = TabularReader(tmp_path)
    messages = _user_warnings(lambda: reader.fit(IDS[:6]))
    assert len(messages) == 2
    sex, admission = messages
    path = str(tmp_path / "tabular.parquet")
    assert path in sex and "column 'sex'" in sex and "[['F', 'f'], ['Female', 'Female '], ['M', 'M ']]" in sex
    assert "'p0'" in sex and "different levels" in sex and "strip()" in sex
    assert path in admission and "column 'admission'" in admission and "[['EMERGENCY', 'Emergency']]" in admission
    # not merged: every spelling of the training rows is its own level
    assert reader.state_dict()["fitted"]["levels"]["sex"] == ["F", "Female", "Female ", "M", "M ", "f"]


def test_tabular_collision_outside_training_rows_is_reported(tmp_path):
    df = pd.DataFrame({"patient_id": IDS, "sex": ["F", "M", "F", "M", "F", "M", "f", "m "]})
    df.to_parquet(tmp_path / "tabular.parquet", index=False)
    messages = _user_warnings(lambda: TabularReader(tmp_path).fit(IDS[:6]))
    assert len(messages) == 1 and "[['F', 'f'], ['M', 'm ']]" in messages[0] and "'p6'" in messages[0]


def test_tabular_distinct_levels_do_not_warn(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TabularReader(tiny.root).fit(tiny.train)


def test_timeseries_variable_names_warn_once(tmp_path):
    rows = [("a", 0.0, "creatinine", 1.0), ("a", 1.0, "Creatinine", 1.1), ("b", 0.0, " creatinine", 0.9),
            ("b", 0.0, "hr", 80.0), ("b", 1.0, "HR", 82.0), ("a", 2.0, "sbp", 120.0)]
    pd.DataFrame(rows, columns=["patient_id", "time", "variable", "value"]).to_parquet(
        tmp_path / "timeseries.parquet", index=False)
    reader = TimeseriesReader(tmp_path)
    messages = _user_warnings(lambda: reader.fit(["a", "b"]))
    assert len(messages) == 1
    msg = messages[0]
    assert str(tmp_path / "timeseries.parquet") in msg and "column 'variable'" in msg
    assert "[[' creatinine', 'Creatinine', 'creatinine'], ['HR', 'hr']]" in msg and "different variables" in msg
    assert reader.spec()["variables"] == [" creatinine", "Creatinine", "HR", "creatinine", "hr", "sbp"]


def test_timeseries_distinct_variables_do_not_warn(tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TimeseriesReader(tiny.root).fit(tiny.train)


def test_synthetic_tabular_does_not_warn(synthetic_cohort):
    ids = pd.read_csv(synthetic_cohort / "splits.csv", dtype={"patient_id": str})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TabularReader(synthetic_cohort).fit(ids.loc[ids["split"] == "train", "patient_id"].tolist())
