"""Bring-your-own-data slips that used to pass silently or with an error that did not say what to do
(tiny cohort of tests/datasets/conftest.py): datetime/timedelta times, NaN rows, float patient ids,
patient ids that differ from labels.parquet's only in their format."""

from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.reader import to_float

HOURS_HINT = r"times must be numbers: hours from the patient's index time \(labels: days\), e\.g\. .*/ 3600"
FLOAT_IDS_HINT = r"write patient_id as integers or text \(float ids come from merges that introduced NaN\)"


def _as_datetime(hours: pd.Series, tz: str | None = None) -> pd.Series:
    start = pd.Timestamp("2022-03-01 08:00", tz=tz)
    return start + pd.to_timedelta(hours, unit="h")


# ---------------------------------------------------------------------------- datetime / timedelta times
@pytest.mark.parametrize("kind, dtype", [("datetime", r"timestamp\[ns\]"), ("timedelta", r"duration\[ns\]"),
                                         ("datetime_tz", r"timestamp\[ns, tz=UTC\]")])
def test_timeseries_temporal_time_is_refused_naming_file_column_and_dtype(tiny, kind, dtype):
    ts = tiny.timeseries.copy()
    ts["time"] = {"datetime": lambda h: _as_datetime(h), "timedelta": lambda h: pd.to_timedelta(h, unit="h"),
                  "datetime_tz": lambda h: _as_datetime(h, "UTC")}[kind](ts["time"])
    ts.to_parquet(tiny.root / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=rf"timeseries\.parquet: column 'time' is {dtype}, not numbers; {HOURS_HINT}"):
        Cohort.load(tiny.root, ["timeseries"])


def test_timeseries_temporal_value_is_refused(tiny):
    ts = tiny.timeseries.copy()
    ts["value"] = pd.to_timedelta(ts["value"], unit="h")
    ts.to_parquet(tiny.root / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=r"timeseries\.parquet: column 'value' is duration\[ns\], not numbers"):
        Cohort.load(tiny.root, ["timeseries"])


@pytest.mark.parametrize("kind, dtype", [
    ("datetime", r"datetime64\[ns\]"), ("datetime_tz", r"datetime64\[ns, UTC\]"),
    ("timedelta", r"timedelta64\[ns\]"), ("date", "date objects"),
])
def test_notes_temporal_time_is_refused_naming_file_column_and_dtype(tiny, kind, dtype):
    notes = tiny.notes.copy()
    h = notes["time"]
    notes["time"] = {"datetime": lambda: _as_datetime(h), "datetime_tz": lambda: _as_datetime(h, "UTC"),
                     "timedelta": lambda: pd.to_timedelta(h, unit="h"),
                     "date": lambda: [datetime.date(2022, 3, 1) + datetime.timedelta(days=int(x)) for x in h]}[kind]()
    notes.to_parquet(tiny.root / "notes.parquet", index=False)
    with pytest.raises(ValueError, match=rf"notes\.parquet: column 'time' is {dtype}, not numbers; {HOURS_HINT}"):
        Cohort.load(tiny.root, ["notes"])


@pytest.mark.parametrize("kind", ["timedelta", "datetime"])
def test_label_time_as_timedelta_or_datetime_is_refused_with_a_days_hint(tiny, kind):
    labels = tiny.labels.copy()
    days = labels["time"]
    labels["time"] = pd.to_timedelta(days, unit="D") if kind == "timedelta" else pd.Timestamp("2022-01-01") + pd.to_timedelta(days, unit="D")
    labels.to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=r"labels\.parquet: column 'time' is (timedelta|datetime)64\[ns\], not numbers; "
                                         r"label times must be numbers: days .*/ 86400"):
        Cohort.load(tiny.root, ["tabular"])


def test_to_float_refuses_temporal_columns_and_objects_but_reads_numbers(tmp_path):
    ids = ["a", "b"]
    for values in (pd.Series(pd.to_datetime(["2022-01-01", "2022-01-02"])),
                   pd.Series([pd.Timedelta(hours=1), pd.Timedelta(hours=2)], dtype=object),
                   pd.Series(pd.period_range("2022-01", periods=2, freq="M"))):
        with pytest.raises(ValueError, match=rf"x\.csv: column 'time' is .*, not numbers; {HOURS_HINT}"):
            to_float(values, tmp_path / "x.csv", "time", ids)
    np.testing.assert_array_equal(to_float(pd.Series(["1.5", None]), tmp_path / "x.csv", "time", ids), [1.5, np.nan])


def test_numeric_times_still_load(tiny):
    cohort = Cohort.load(tiny.root, ["timeseries", "notes"], notes={"min_patients": 1}).fit()
    train_times = tiny.timeseries.loc[tiny.timeseries["patient_id"].isin(tiny.train), "time"]
    assert cohort.spec()["timeseries"]["horizon_hours"] == np.ceil(train_times.max())
    np.testing.assert_array_equal(cohort.readers["notes"].get("p00")["note_times"], [1.0, 2.0, 30.0])


# ---------------------------------------------------------------------------- NaN: say what to do
@pytest.mark.parametrize(("table", "column", "patient", "match"), [
    ("timeseries", "value", "p03", r"timeseries\.parquet: column 'value' has null/NaN/inf values for patient\(s\) "
                                   r"\['p03'\]; drop rows without a value: a measurement not taken is simply absent"),
    ("notes", "time", "p05", r"notes\.parquet: column 'time' has NaN/inf values for patient\(s\) \['p05'\]; drop notes"),
])
def test_nan_rows_say_to_drop_the_rows(tiny, table, column, patient, match):
    frame = getattr(tiny, table).copy()
    frame.loc[frame["patient_id"] == patient, column] = np.nan
    frame.to_parquet(tiny.root / f"{table}.parquet", index=False)
    with pytest.raises(ValueError, match=match):
        Cohort.load(tiny.root, [table])


def test_timeseries_inf_value_gets_no_drop_hint(tiny):
    ts = tiny.timeseries.copy()
    ts.loc[ts.index[0], "value"] = np.inf
    ts.to_parquet(tiny.root / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=r"column 'value' has null/NaN/inf values for patient\(s\) \['\w+'\]$"):
        Cohort.load(tiny.root, ["timeseries"])


@pytest.mark.parametrize("rows", ["all", "one"])
def test_genomics_nan_expression_says_to_drop_the_gene_or_the_row(tiny, rows):
    gen = tiny.genomics.copy()
    gen["EGFR_rnaseq"] = gen["EGFR_rnaseq"].astype(float)
    if rows == "all":
        gen["EGFR_rnaseq"] = np.nan
    else:
        gen.loc[gen["patient_id"] == "p04", "EGFR_rnaseq"] = np.nan
    gen.to_csv(tiny.root / "genomics.csv", index=False)
    who = r"\['p00', 'p01'.*\]" if rows == "all" else r"\['p04'\]"
    with pytest.raises(ValueError, match=rf"genomics\.csv: column 'EGFR_rnaseq' has NaN/inf values for patient\(s\) {who}; "
                                         r"drop that gene column, or the patient's row \(a patient without genomics is simply absent\)"):
        Cohort.load(tiny.root, ["genomics"])


def test_genomics_nan_mutation_says_to_drop_the_gene_or_the_row(tiny):
    gen = tiny.genomics.copy().astype({"TP53_mut": float})
    gen.loc[gen["patient_id"] == "p02", "TP53_mut"] = np.nan
    gen.to_csv(tiny.root / "genomics.csv", index=False)
    with pytest.raises(ValueError, match=r"genomics\.csv: column 'TP53_mut' must be 0/1; patient\(s\) \['p02'\]; "
                                         r"NaN is not allowed: drop that gene column"):
        Cohort.load(tiny.root, ["genomics"])




# ---------------------------------------------------------------------------- float patient ids
def _float_ids(df: pd.DataFrame) -> pd.DataFrame:
    """``p03`` -> ``3.0``: the ids a merge that introduced NaN leaves."""
    return df.assign(patient_id=df["patient_id"].str[1:].astype(float))


@pytest.mark.parametrize("name, modalities", [("labels", ["tabular"]), ("tabular", ["tabular"]),
                                              ("oracle", ["tabular"]), ("notes", ["notes"]),
                                              ("timeseries", ["timeseries"])])
def test_float_patient_ids_are_refused_naming_file_and_an_example(tiny, name, modalities):
    if name != "labels":  # the other files match labels written with the integer ids
        _int = tiny.labels.assign(patient_id=tiny.labels["patient_id"].str[1:].astype(int))
        _int.to_parquet(tiny.root / "labels.parquet", index=False)
        tiny.splits.assign(patient_id=_int["patient_id"]).to_csv(tiny.root / "splits.csv", index=False)
        tiny.oracle.assign(patient_id=_int["patient_id"]).to_parquet(tiny.root / "oracle.parquet", index=False)
    _float_ids(getattr(tiny, name)).to_parquet(tiny.root / f"{name}.parquet", index=False)
    with pytest.raises(ValueError, match=rf"{name}\.parquet: column 'patient_id' holds floats \(e\.g\. \d+\.0\); {FLOAT_IDS_HINT}"):
        Cohort.load(tiny.root, modalities)


def test_float_patient_ids_in_an_object_column_are_refused(tiny):
    labels = tiny.labels.assign(patient_id=pd.Series([float(i) for i in range(12)], dtype=object))
    labels.to_parquet(tiny.root / "labels.parquet", index=False)
    with pytest.raises(ValueError, match=rf"labels\.parquet: column 'patient_id' holds floats \(e\.g\. 0\.0\); {FLOAT_IDS_HINT}"):
        Cohort.load(tiny.root, ["tabular"])


def test_integer_patient_ids_still_load(tiny):
    as_int = {name: getattr(tiny, name).assign(patient_id=getattr(tiny, name)["patient_id"].str[1:].astype(int))
              for name in ("labels", "tabular", "timeseries")}
    for name, df in as_int.items():
        df.to_parquet(tiny.root / f"{name}.parquet", index=False)
    as_int["labels"][["patient_id"]].assign(split=tiny.splits["split"]).to_csv(tiny.root / "splits.csv", index=False)
    (tiny.root / "oracle.parquet").unlink()
    cohort = Cohort.load(tiny.root, ["tabular", "timeseries"])
    assert cohort.patient_ids[:3] == ["0", "1", "2"] and cohort.readers["timeseries"].has("3")


@pytest.mark.parametrize("name, modalities", [("splits.csv", ["tabular"]), ("tabular.parquet", ["tabular"]),
                                              ("notes.parquet", ["notes"]), ("timeseries.parquet", ["timeseries"])])
def test_ids_not_in_labels_show_some_of_the_labels_ids(tiny, name, modalities):
    frame = getattr(tiny, name.split(".")[0])
    frame = frame.assign(patient_id=frame["patient_id"].str.upper())  # 'P03' where labels have 'p03'
    if name.endswith(".csv"):
        frame.to_csv(tiny.root / name, index=False)
    else:
        frame.to_parquet(tiny.root / name, index=False)
    with pytest.raises(ValueError, match=rf"{name}: patient_id\(s\) \['P00', .*\] are not in labels\.parquet "
                                         r"\(its ids look like \['p00', 'p01', 'p02', 'p03', 'p04'\]\)"):
        Cohort.load(tiny.root, modalities)
