"""MEDS converter: fixture -> convert_meds -> Cohort / data module, leakage, caching, bad inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import polars as pl
import pytest

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.meds import convert_meds
from clinfuse.datasets.meds_fixture import FUTURE_CODE, write_meds_fixture

SPLIT = {"train": "train", "tuning": "val", "held_out": "test"}


@pytest.fixture(scope="module")
def meds(tmp_path_factory):
    return write_meds_fixture(tmp_path_factory.mktemp("meds") / "src", n_subjects=12, seed=0, n_events_per_subject=8)


@pytest.fixture
def fresh(tmp_path):
    """A fixture copy that tests may damage."""
    return write_meds_fixture(tmp_path / "src", n_subjects=6, seed=1, n_events_per_subject=4)


def _expected_events(meds, lab: pd.DataFrame, lookback: float | None = None) -> pd.DataFrame:
    """Timeseries rows recomputed with pandas from the rows the fixture wrote."""
    ev = meds.events.to_pandas()
    ev = ev[ev["time"].notna() & ev["numeric_value"].notna()]
    rows = ev.merge(lab[["subject_id", "prediction_time"]], on="subject_id")
    keep = rows["time"] <= rows["prediction_time"]
    if lookback is not None:
        keep &= rows["time"] >= rows["prediction_time"] - pd.Timedelta(hours=lookback)
    rows = rows[keep].copy()
    rows["patient_id"] = rows["subject_id"].astype(str) + "@" + rows["prediction_time"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return rows


def test_round_trip_survival(meds, tmp_path):
    out = convert_meds(meds.root, tmp_path / "c", labels=meds.tte_labels)
    lab = pd.read_parquet(meds.tte_labels)
    cohort = Cohort.load(out).fit()
    assert cohort.modalities == ["tabular", "timeseries", "notes"]
    assert len(cohort.patient_ids) == len(lab) == 12 + 4  # every third subject has two prediction times
    # labels: time/event straight from the label file
    got = cohort.labels.set_index("patient_id")
    for row in lab.itertuples():
        pid = f"{row.subject_id}@{row.prediction_time:%Y-%m-%dT%H:%M:%S}"
        assert got.loc[pid, "time"] == row.time_to_event and got.loc[pid, "event"] == int(row.event)
    # splits by subject, MEDS names mapped
    subj_split = pd.read_parquet(meds.root / "metadata" / "subject_splits.parquet").set_index("subject_id")["split"]
    for split, ids in cohort.splits.items():
        for pid in ids:
            assert SPLIT[subj_split[int(pid.split("@")[0])]] == split
    # timeseries: exactly the valued events at or before the prediction time; times from the first one
    ts = pd.read_parquet(out / "timeseries.parquet")
    exp = _expected_events(meds, lab)
    assert FUTURE_CODE not in set(ts["variable"]) and len(ts) == len(exp)
    pid = exp["patient_id"].iloc[0]
    e = exp[exp["patient_id"] == pid].sort_values("time")
    index = e["prediction_time"].iloc[0] - pd.Timedelta(hours=47)  # NOTE//ADMISSION at t0 + 1 h comes first
    hours = (e["time"] - index).dt.total_seconds().to_numpy() / 3600
    np.testing.assert_allclose(np.sort(ts.loc[ts["patient_id"] == pid, "time"].to_numpy()), hours)
    # notes: the admission note only, never the discharge note written after every prediction time
    notes = pd.read_parquet(out / "notes.parquet")
    assert len(notes) == len(lab) and "discharged home" not in set(notes["text"])
    # tabular: static HEIGHT and GENDER of the subject, age at the prediction time
    tab = pd.read_parquet(out / "tabular.parquet").set_index("patient_id")
    ev = meds.events.to_pandas()
    subject = int(pid.split("@")[0])
    mine = ev[ev["subject_id"] == subject]
    assert tab.loc[pid, "HEIGHT"] == pytest.approx(float(mine.loc[mine["code"] == "HEIGHT", "numeric_value"].iloc[0]))
    assert tab.loc[pid, "GENDER"] == mine.loc[mine["code"].str.startswith("GENDER//"), "code"].iloc[0].split("//")[1]
    birth = mine.loc[mine["code"] == "MEDS_BIRTH", "time"].iloc[0]
    pred = pd.Timestamp(pid.split("@")[1])
    assert tab.loc[pid, "age_years"] == pytest.approx((pred - birth).total_seconds() / (365.25 * 86400))
    assert json.loads((out / "cohort.json").read_text())["n_events"]["timeseries"] == len(exp)


def test_data_module_batch(meds, tmp_path):
    from clinfuse.datasets.datamodule import ClinicalDataModule

    out = convert_meds(meds.root, tmp_path / "c", labels=meds.binary_labels)
    dm = ClinicalDataModule(root=str(out), batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert list(batch["labels"]) == ["binary"]
    want = pd.read_parquet(out / "labels.parquet").set_index("patient_id").loc[batch["patient_id"], "binary"]
    assert batch["labels"]["binary"].tolist() == want.astype(float).tolist()
    assert set(batch["inputs"]) == {"tabular", "timeseries", "notes"}
    assert dm.spec["timeseries"]["variables"] == ["LAB//GLUCOSE", "LAB//HR", "LAB//SBP"]


def test_lookback_window(meds, tmp_path):
    out = convert_meds(meds.root, tmp_path / "c", labels=meds.tte_labels, max_hours_before=12.0)
    ts = pd.read_parquet(out / "timeseries.parquet")
    exp = _expected_events(meds, pd.read_parquet(meds.tte_labels), lookback=12.0)
    assert len(ts) == len(exp) and ts["time"].between(0.0, 12.0).all()
    # hours from prediction_time - 12 h, checked on one sample by hand
    e = exp[exp["patient_id"] == exp["patient_id"].iloc[0]]
    want = 12.0 - (e["prediction_time"] - e["time"]).dt.total_seconds().to_numpy() / 3600
    got = ts.loc[ts["patient_id"] == e["patient_id"].iloc[0], "time"].to_numpy()
    np.testing.assert_allclose(np.sort(got), np.sort(want))


def test_cached_then_reconverted(fresh, tmp_path, capsys):
    out = convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)
    mtime = (out / "labels.parquet").stat().st_mtime_ns
    convert_meds(fresh.root, out, labels=fresh.tte_labels)
    assert (out / "labels.parquet").stat().st_mtime_ns == mtime and "reusing" in capsys.readouterr().out
    shard = fresh.root / "data" / "train" / "0.parquet"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    convert_meds(fresh.root, out, labels=fresh.tte_labels)
    assert (out / "labels.parquet").stat().st_mtime_ns != mtime


def test_categorical_integer_and_float_labels(fresh, tmp_path):
    lab = pl.read_parquet(fresh.binary_labels)
    levels = np.array(["high", "low", "mid"])[np.arange(len(lab)) % 3]
    lab.with_columns(pl.Series("categorical_value", levels), pl.lit(None, pl.Boolean).alias("boolean_value"),
                     (pl.int_range(pl.len()) * 0.5).alias("float_value")).write_parquet(tmp_path / "cat.parquet")
    out = convert_meds(fresh.root, tmp_path / "c", labels=tmp_path / "cat.parquet", task="severity")
    info = json.loads((out / "cohort.json").read_text())
    assert info["label_levels"] == ["high", "low", "mid"] and info["n_classes"] == 3 and info["task"] == "severity"
    got = pd.read_parquet(out / "labels.parquet")
    assert list(got.columns) == ["patient_id", "multiclass", "label_float"]
    ids = lab["subject_id"].cast(pl.String) + "@" + lab["prediction_time"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    want = dict(zip(ids.to_list(), [["high", "low", "mid"].index(v) for v in levels]))
    assert got["multiclass"].tolist() == [want[p] for p in got["patient_id"]]
    np.testing.assert_array_equal(got["label_float"], [0.5 * ids.to_list().index(p) for p in got["patient_id"]])
    assert Cohort.load(out).n_classes == 3


# ---------------------------------------------------------------------- bad inputs
def _edit_shard(meds, fn):
    path = meds.root / "data" / "train" / "0.parquet"
    fn(pl.read_parquet(path)).write_parquet(path)
    return path


def test_missing_required_column(fresh, tmp_path):
    _edit_shard(fresh, lambda df: df.drop("code"))
    with pytest.raises(ValueError, match=r"train/0\.parquet.*missing.*'code'"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_subject_id_as_string(fresh, tmp_path):
    _edit_shard(fresh, lambda df: df.with_columns(pl.col("subject_id").cast(pl.String)))
    with pytest.raises(ValueError, match=r"train/0\.parquet.*'subject_id'.*dtype String"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_time_as_string(fresh, tmp_path):
    _edit_shard(fresh, lambda df: df.with_columns(pl.col("time").dt.strftime("%d/%m/%Y %H:%M")))
    with pytest.raises(ValueError, match=r"train/0\.parquet.*'time'.*dtype String.*timestamps"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_numeric_value(fresh, tmp_path, bad):
    subject = {}

    def poison(df):
        i = df["numeric_value"].is_not_null().arg_true()[0]
        subject["id"] = df["subject_id"][int(i)]
        return df.with_columns(pl.when(pl.int_range(pl.len()) == i).then(bad).otherwise(pl.col("numeric_value"))
                               .cast(pl.Float32).alias("numeric_value"))

    _edit_shard(fresh, poison)
    with pytest.raises(ValueError, match=rf"train/0\.parquet.*'numeric_value'.*NaN/inf.*{subject['id']}"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


@pytest.mark.parametrize("value", [0.0, -3.0])
def test_non_positive_time_to_event(fresh, tmp_path, value):
    lab = pl.read_parquet(fresh.tte_labels)
    lab.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(value).otherwise(pl.col("time_to_event"))
                     .alias("time_to_event")).write_parquet(fresh.tte_labels)
    with pytest.raises(ValueError, match=rf"tte\.parquet.*'time_to_event'.*> 0.*{lab['subject_id'][2]}"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_duplicate_label_rows(fresh, tmp_path):
    lab = pl.read_parquet(fresh.tte_labels)
    pl.concat([lab, lab[3]]).write_parquet(fresh.tte_labels)
    with pytest.raises(ValueError, match=rf"tte\.parquet.*duplicate.*subject {lab['subject_id'][3]}"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_labelled_subject_without_split(fresh, tmp_path):
    path = fresh.root / "metadata" / "subject_splits.parquet"
    splits = pl.read_parquet(path)
    gone = splits["subject_id"][0]
    splits.filter(pl.col("subject_id") != gone).write_parquet(path)
    with pytest.raises(ValueError, match=rf"subject_splits\.parquet.*\[{gone}\].*no split"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_time_to_event_without_event(fresh, tmp_path):
    pl.read_parquet(fresh.tte_labels).drop("event").write_parquet(fresh.tte_labels)
    with pytest.raises(ValueError, match=r"tte\.parquet.*missing.*'event'"):
        convert_meds(fresh.root, tmp_path / "c", labels=fresh.tte_labels)


def test_event_as_integer(fresh, tmp_path):
    lab = pl.read_parquet(fresh.tte_labels)
    lab.with_columns(pl.col("event").cast(pl.Int64)).write_parquet(fresh.tte_labels)
    out = convert_meds(fresh.root, tmp_path / "ok", labels=fresh.tte_labels)
    assert pd.read_parquet(out / "labels.parquet")["event"].sum() == lab["event"].sum()
    lab.with_columns(pl.col("event").cast(pl.Int64) * 2 + 1).write_parquet(fresh.tte_labels)
    with pytest.raises(ValueError, match=rf"tte\.parquet.*'event'.*0/1.*{lab['subject_id'][0]}"):
        convert_meds(fresh.root, tmp_path / "bad", labels=fresh.tte_labels)
