"""Values finite in float64 but beyond float32's range would be inf in the models' tensors (or, for
a time series, overflow the variable's sd and zero every value of it): refused, naming the place."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.genomics import GenomicsReader
from clinfuse.datasets.reader import check_finite
from clinfuse.datasets.tabular import TabularReader
from clinfuse.datasets.timeseries import TimeseriesReader
from clinfuse.experiments.prognosis_inputs import tabular_item, timeseries_item


def test_check_finite_flags_values_beyond_float32():
    check_finite(np.array([3.0e38, -3.0e38]), ["a", "b"], "f.csv", "x")  # representable: fine
    with pytest.raises(ValueError, match=r"f.csv: column 'x' has values beyond float32's range .* for patient\(s\) \['b'\]"):
        check_finite(np.array([1.0, 1e39]), ["a", "b"], "f.csv", "x")


@pytest.mark.parametrize("column", ["value", "time"])
def test_a_huge_time_series_entry_is_refused(tiny, column):
    df = pd.read_parquet(tiny.root / "timeseries.parquet")
    df.loc[2, column] = 1e300
    df.to_parquet(tiny.root / "timeseries.parquet", index=False)
    who = df.loc[2, "patient_id"]
    with pytest.raises(ValueError, match=rf"timeseries.parquet: column '{column}' has values beyond float32's range .*'{who}'"):
        TimeseriesReader(tiny.root).fit(tiny.train)


def test_a_huge_tabular_value_is_refused(tiny):
    df = pd.read_parquet(tiny.root / "tabular.parquet")
    df.loc[1, "lactate"] = -1e300
    df.to_parquet(tiny.root / "tabular.parquet", index=False)
    with pytest.raises(ValueError, match=rf"column 'lactate' has values beyond float32's range .*'{df.loc[1, 'patient_id']}'"):
        TabularReader(tiny.root)


def test_a_huge_expression_value_is_refused(tiny):
    df = pd.read_csv(tiny.root / "genomics.csv", dtype={"patient_id": str})
    col = next(c for c in df.columns if c.endswith("_rnaseq"))
    df[col] = df[col].astype(float)
    df.loc[0, col] = 1e200
    df.to_csv(tiny.root / "genomics.csv", index=False)
    with pytest.raises(ValueError, match=rf"column '{col}' has values beyond float32's range"):
        GenomicsReader(tiny.root)


def test_the_prediction_api_refuses_huge_values_naming_the_field(tiny):
    reader = TabularReader(tiny.root).fit(tiny.train)
    with pytest.raises(ValueError, match=r"field 'tabular.lactate': value must be finite and within float32's range"):
        tabular_item(reader.state_dict(), {"age": 50.0, "lactate": 1e39})
    ts = TimeseriesReader(tiny.root).fit(tiny.train)
    var = ts.state_dict()["fitted"]["variables"][0]
    with pytest.raises(ValueError, match=r"field 'timeseries.value\[1\]': value must be finite and within float32's range"):
        timeseries_item(ts.state_dict(), {"time": [1.0, 2.0], "variable": [var, var], "value": [1.0, 1e300]})
