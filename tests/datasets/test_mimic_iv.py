"""convert_mimic_iv on the seeded fake MIMIC-IV: labels, windows, leakage, caching, bad inputs.

Expected values are recomputed here with pandas from the csv.gz files the fixture wrote.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import resample_poly

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.mimic_iv import convert_mimic_iv
from clinfuse.datasets.mimic_iv_fixture import ecg_signal, write_mimic_iv_fixture

H = pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_mimic_iv_fixture(tmp_path_factory.mktemp("mimic"), n_subjects=12, seed=0)


@pytest.fixture
def fx(pristine, tmp_path):
    """A private copy of the fixture (tests may damage it): (mimic root, ecg root)."""
    shutil.copytree(pristine[0].parent, tmp_path / "src")
    return tmp_path / "src" / "mimic-iv", tmp_path / "src" / "mimic-iv-ecg"


@pytest.fixture(scope="module")
def converted(pristine, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return {t: convert_mimic_iv(pristine[0], out / t, task=t, ecg=pristine[1]) for t in ("mortality_48h", "los_7d", "survival")}


def table(root: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(root / f"{name}.csv.gz")


def expected_stays(root: Path) -> pd.DataFrame:
    """First ICU stay per subject, longer than 48 h, subject alive at intime + 48 h (by hand, pandas)."""
    icu = table(root, "icu/icustays").sort_values(["subject_id", "intime"]).groupby("subject_id").head(1)
    adm, pat = table(root, "hosp/admissions"), table(root, "hosp/patients")
    df = icu.merge(adm[["hadm_id", "deathtime", "hospital_expire_flag"]], on="hadm_id").merge(pat, on="subject_id")
    for c in ("intime", "outtime", "deathtime", "dod"):
        df[c] = pd.to_datetime(df[c])
    death = df["subject_id"].map(adm.assign(d=pd.to_datetime(adm["deathtime"])).groupby("subject_id")["d"].max())
    df["death"] = death.fillna(df["dod"])
    pred = df["intime"] + 48 * H
    df = df[(df["outtime"] - df["intime"] > 48 * H) & (df["death"].isna() | (df["death"] > pred))].copy()
    last = pd.concat([adm[["subject_id", "dischtime"]].rename(columns={"dischtime": "t"}),
                      table(root, "icu/icustays")[["subject_id", "outtime"]].rename(columns={"outtime": "t"})])
    last = last.assign(t=pd.to_datetime(last["t"])).groupby("subject_id")["t"].max()
    end = df["death"].fillna(df["subject_id"].map(last))
    df["time"] = (end - df["intime"] - 48 * H) / pd.Timedelta(days=1)
    df["event"] = df["death"].notna().astype(int)
    df["patient_id"] = df["stay_id"].astype(str)
    return df.set_index("patient_id")


def test_labels_match_hand_computation(pristine, converted):
    exp = expected_stays(pristine[0])
    assert 0 < len(exp) < 12  # some subjects were excluded (stays <= 48 h)
    for task in converted:
        labels = pd.read_parquet(converted[task] / "labels.parquet").set_index("patient_id")
        assert sorted(labels.index) == sorted(exp.index)
        exp_t = exp.loc[labels.index]
        if task == "mortality_48h":
            assert labels["binary"].tolist() == exp_t["hospital_expire_flag"].tolist()
            assert labels["binary"].sum() > 0
        elif task == "los_7d":
            assert labels["binary"].tolist() == (exp_t["los"] > 7).astype(int).tolist() and 0 < labels["binary"].sum()
        else:
            np.testing.assert_allclose(labels["time"], exp_t["time"])
            assert labels["event"].tolist() == exp_t["event"].tolist() and (labels["time"] > 0).all()
            assert 0 < labels["event"].sum() < len(labels)


def test_second_stays_and_short_stays_excluded(converted):
    ids = set(pd.read_parquet(converted["los_7d"] / "labels.parquet")["patient_id"])
    assert "30000031" not in ids and "30000030" in ids  # subject 3: first stay only
    assert "30000040" not in ids and "30000090" not in ids  # 1.5-day stays (i % 5 == 4)


def test_events_window_and_no_leak(pristine, converted):
    out = converted["survival"]
    ts = pd.read_parquet(out / "timeseries.parquet")
    assert ts["time"].between(-24.0, 48.0).all()
    per = ts.groupby("patient_id").size()
    # labs at -10, 5, 20, 47 h x 3 items minus the text-only lactate at 5 h; charts at 1, 24, 47.5 h x 2
    assert (per == 4 * 3 - 1 + 3 * 2).all() and len(per) == len(pd.read_parquet(out / "labels.parquet"))
    assert set(ts["variable"]) == {"Creatinine", "Lactate", "51006", "Heart Rate", "Non Invasive Blood Pressure systolic"}
    labs = table(pristine[0], "hosp/labevents")
    icu = table(pristine[0], "icu/icustays").set_index("stay_id")
    row = labs[(labs["subject_id"] == 10000002) & (labs["itemid"] == 50912)].iloc[3]  # +20 h creatinine
    got = ts[(ts["patient_id"] == "30000020") & (ts["variable"] == "Creatinine")]
    hours = (pd.Timestamp(row["charttime"]) - pd.Timestamp(icu.loc[30000020, "intime"])) / H
    assert hours == 20.0 and got.loc[got["time"] == hours, "value"].item() == row["valuenum"]
    notes = pd.read_parquet(out / "notes.parquet")
    assert (notes["time"] <= 48.0).all() and not notes["text"].str.contains("LATE|LEAKED").any()
    assert notes.groupby("patient_id").size().eq(1).all()


def test_ecg_linked_in_window_and_round_trip(pristine, converted):
    out = converted["mortality_48h"]
    rec = pd.read_csv(out / "ecg" / "records.csv")
    assert rec["patient_id"].astype(str).tolist() == ["30000000", "30000030", "30000060"]
    assert (rec["time"] == 5.0).all()  # the -30 h one is too early, the +60 h one after the prediction time
    assert all(Path(r).is_absolute() and r.endswith(f"/{40000000 + 10 * i + 1}") for r, i in zip(rec["record"], (0, 3, 6)))
    cohort = Cohort.load(out).fit()
    assert cohort.modalities == ["tabular", "timeseries", "ecg", "notes"]
    item = cohort.readers["ecg"].get("30000030")
    np.testing.assert_allclose(item["signal"][2], resample_poly(ecg_signal(40000031)[:, 2], 1, 5)[:1000], atol=1e-3)
    tab = pd.read_parquet(out / "tabular.parquet").set_index("patient_id")
    pat = table(pristine[0], "hosp/patients").set_index("subject_id")
    assert tab.loc["30000030", "age"] == pat.loc[10000003, "anchor_age"] + 1  # admitted the year after anchor_year
    assert tab.loc["30000030", "gender"] == pat.loc[10000003, "gender"]
    dm = ClinicalDataModule(root=str(out), batch_size=32)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    labels = pd.read_parquet(out / "labels.parquet").set_index("patient_id")
    assert batch["labels"]["binary"].tolist() == labels.loc[batch["patient_id"], "binary"].astype(float).tolist()
    splits = pd.read_csv(out / "splits.csv", dtype=str).set_index("patient_id")["split"]
    assert set(batch["patient_id"]) == set(splits[splits == "train"].index)


def test_all_stays_split_by_subject(pristine, tmp_path):
    out = convert_mimic_iv(pristine[0], tmp_path / "o", task="los_7d", all_stays=True, seed=3)
    mapping = pd.read_csv(out / "sample_map.csv", dtype=str)
    splits = pd.read_csv(out / "splits.csv", dtype=str).merge(mapping, on="patient_id")
    assert {"30000031", "30000030", "30000070", "30000071"} <= set(splits["patient_id"])
    assert splits.groupby("subject_id")["split"].nunique().max() == 1


def test_conversion_cached_and_invalidated(fx, tmp_path, capsys):
    out = convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d")
    mtime = (out / "labels.parquet").stat().st_mtime_ns
    convert_mimic_iv(fx[0], out, task="los_7d")
    assert "reusing converted cohort" in capsys.readouterr().out
    assert (out / "labels.parquet").stat().st_mtime_ns == mtime
    path = fx[0] / "icu" / "icustays.csv.gz"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**10))
    convert_mimic_iv(fx[0], out, task="los_7d")
    assert (out / "labels.parquet").stat().st_mtime_ns != mtime
    with pytest.raises(ValueError, match="not a mimic_iv conversion"):
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "x.txt").write_text("x")
        convert_mimic_iv(fx[0], tmp_path / "foreign", task="los_7d")


# ---------------------------------------------------------------------- bad inputs
def edit(root: Path, name: str, fn) -> None:
    """Rewrite ``root/name.csv.gz`` (all columns as strings) through ``fn(df) -> df``."""
    path = root / f"{name}.csv.gz"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    with gzip.open(path, "wt") as fh:
        fn(df).to_csv(fh, index=False)


def set_cell(col: str, row: int, value: str):
    def fn(df):
        df.loc[row, col] = value
        return df
    return fn


@pytest.mark.parametrize("name, column", [
    ("hosp/patients", "dod"), ("hosp/admissions", "hospital_expire_flag"), ("icu/icustays", "intime"),
    ("hosp/labevents", "valuenum"), ("icu/chartevents", "stay_id"), ("hosp/d_labitems", "label"),
    ("note/radiology", "text"),
])
def test_missing_required_column(fx, tmp_path, name, column):
    edit(fx[0], name, lambda df: df.drop(columns=[column]))
    with pytest.raises(ValueError, match=rf"{name.split('/')[1]}\.csv\.gz: missing required column.*'{column}'"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="survival")


def test_missing_record_list_column(fx, tmp_path):
    path = fx[1] / "record_list.csv"
    pd.read_csv(path).drop(columns=["ecg_time"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"record_list\.csv: missing required column.*'ecg_time'"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="survival", ecg=fx[1])


@pytest.mark.parametrize("name, column, value, what", [
    ("hosp/patients", "anchor_age", "sixty", "non-numeric"), ("icu/icustays", "stay_id", "3.5e", "non-integer"),
    ("hosp/admissions", "hospital_expire_flag", "yes", "non-integer"),
])
def test_wrong_dtype(fx, tmp_path, name, column, value, what):
    edit(fx[0], name, set_cell(column, 2, value))
    with pytest.raises(ValueError, match=rf"{name.split('/')[1]}.*'{column}' has {what} value '{value}' in data row 2"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="mortality_48h")


@pytest.mark.parametrize("name", ["icu/icustays", "icu/chartevents", "note/radiology"])
def test_unparsable_timestamp(fx, tmp_path, name):
    column = "intime" if name == "icu/icustays" else "charttime"
    edit(fx[0], name, set_cell(column, 0, "23/07/2180 14h"))
    with pytest.raises(ValueError, match=rf"{name.split('/')[1]}.*'{column}' has unparsable timestamp .*data row 0 \(subject_id 10000000\)"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d")


@pytest.mark.parametrize("name, column, value", [("hosp/labevents", "valuenum", "inf"), ("icu/icustays", "los", "NaN"),
                                                 ("icu/chartevents", "valuenum", "-inf")])
def test_nan_inf(fx, tmp_path, name, column, value):
    edit(fx[0], name, set_cell(column, 1, value))
    with pytest.raises(ValueError, match=rf"{name.split('/')[1]}.*'{column}' has NaN/inf value '{value}' in data row 1"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d")


def test_death_before_admission_is_negative_survival(fx, tmp_path):
    edit(fx[0], "hosp/patients", set_cell("dod", 0, "2100-01-01"))
    with pytest.raises(ValueError, match=r"patients\.csv\.gz: column 'dod'.*subject_id 10000000.*negative survival"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="survival")


@pytest.mark.parametrize("name, column", [("icu/icustays", "stay_id"), ("hosp/patients", "subject_id"),
                                          ("hosp/admissions", "hadm_id")])
def test_duplicate_ids(fx, tmp_path, name, column):
    edit(fx[0], name, lambda df: pd.concat([df, df.iloc[[1]]]))
    with pytest.raises(ValueError, match=rf"{name.split('/')[1]}.*'{column}' has duplicate id"):
        convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_bad_wfdb_dat_names_record_and_patient(fx, tmp_path, damage):
    out = convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d", ecg=fx[1])
    dat = next((fx[1] / "files").rglob("40000031.dat"))
    dat.unlink() if damage == "missing" else dat.write_bytes(dat.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"40000031.*patient 30000030"):
        Cohort.load(out, ["ecg"])


def test_missing_wfdb_header_warns_and_leaves_ecg_absent(fx, tmp_path):
    next((fx[1] / "files").rglob("40000031.hea")).unlink()
    with pytest.warns(UserWarning, match=r"40000031\.hea does not exist; the ECG of sample 30000030"):
        out = convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d", ecg=fx[1])
    assert pd.read_csv(out / "ecg" / "records.csv")["patient_id"].astype(str).tolist() == ["30000000", "30000060"]


def test_reconversion_removes_stale_modality_files(fx, tmp_path):
    out = convert_mimic_iv(fx[0], tmp_path / "o", task="los_7d", ecg=fx[1])
    assert (out / "ecg" / "records.csv").exists()
    (fx[0] / "note" / "radiology.csv.gz").unlink()
    (fx[0] / "note" / "discharge.csv.gz").unlink()
    convert_mimic_iv(fx[0], out, task="survival")  # no ECG, no notes now
    assert Cohort.available_modalities(out) == ["tabular", "timeseries"]
    assert set(pd.read_parquet(out / "labels.parquet").columns) == {"patient_id", "time", "event"}
