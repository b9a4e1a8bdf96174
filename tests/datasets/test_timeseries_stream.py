"""TimeseriesReader streaming read: batch boundaries, file order, id types, against a pandas reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import clinfuse.datasets.timeseries as ts_module
from clinfuse.datasets.timeseries import TimeseriesReader


def _table(seed: int = 0, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "patient_id": rng.choice(["b", "a10", "a9", "c"], n),
        "time": rng.integers(0, 6, n).astype(float),  # many ties: file order must decide them
        "variable": rng.choice(["hr", "sbp", "lact"], n),
        "value": rng.normal(size=n).round(3),
    })


def _reference(df: pd.DataFrame, train: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Per-patient arrays computed with pandas: stable sort by (patient, time), z-score on train."""
    stats = df[df["patient_id"].isin(train)].groupby("variable")["value"].agg(["mean", lambda v: v.std(ddof=0)])
    variables = sorted(stats.index)
    out = {}
    for pid, g in df.sort_values(["patient_id", "time"], kind="stable").groupby("patient_id", sort=False):
        mean, std = stats.iloc[:, 0].loc[g["variable"]].to_numpy(), stats.iloc[:, 1].loc[g["variable"]].to_numpy()
        out[pid] = {"times": g["time"].to_numpy(), "variables": g["variable"].map(variables.index).to_numpy(),
                    "values": (g["value"].to_numpy() - mean) / std}
    return out


@pytest.mark.parametrize("batch_rows", [7, 1 << 20])
@pytest.mark.parametrize("presorted", [False, True])
def test_matches_pandas_reference(tmp_path, monkeypatch, batch_rows, presorted):
    monkeypatch.setattr(ts_module, "_BATCH_ROWS", batch_rows)  # 7: every batch has its own dictionaries
    df = _table()
    if presorted:
        df = df.sort_values(["patient_id", "time"], kind="stable")
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    train = ["a10", "b", "c"]
    reader = TimeseriesReader(tmp_path, max_events=10**6).fit(train)
    assert reader.spec()["variables"] == ["hr", "lact", "sbp"]
    assert reader.patient_ids == ["a10", "a9", "b", "c"]  # sorted as strings
    for pid, want in _reference(df, train).items():
        got = reader.get(pid)
        np.testing.assert_array_equal(got["times"], want["times"].astype(np.float32))
        np.testing.assert_array_equal(got["variables"], want["variables"])
        np.testing.assert_allclose(got["values"], want["values"], rtol=1e-6)
    assert reader.spec()["horizon_hours"] == float(np.ceil(df.loc[df["patient_id"].isin(train), "time"].max()))


def test_integer_patient_ids_are_strings(tmp_path):
    df = _table().assign(patient_id=lambda d: d["patient_id"].map({"b": 2, "a10": 10, "a9": 9, "c": 3}))
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    reader = TimeseriesReader(tmp_path, known_ids=["2", "3", "9", "10"]).fit(["2", "3"])
    assert reader.patient_ids == ["10", "2", "3", "9"]
    assert len(reader.get("9")["times"]) == (df["patient_id"] == 9).sum()


def test_bad_value_in_a_later_batch_names_its_patient(tmp_path, monkeypatch):
    monkeypatch.setattr(ts_module, "_BATCH_ROWS", 7)
    df = _table()
    df.loc[50, "value"] = np.nan
    df.to_parquet(tmp_path / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=rf"timeseries\.parquet.*'value'.*\['{df.loc[50, 'patient_id']}'\]"):
        TimeseriesReader(tmp_path)
