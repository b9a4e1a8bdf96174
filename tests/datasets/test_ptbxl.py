"""convert_ptbxl on the seeded fake PTB-XL: superclass labels, folds, tabular, ECG, caching, bad inputs.

Expected labels are recomputed here from the written csv files (pandas + ast).
"""

from __future__ import annotations

import ast
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.signal import resample_poly

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.datasets.ptbxl import convert_ptbxl
from clinfuse.datasets.ptbxl_fixture import ecg_signal, write_ptbxl_fixture

CLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_ptbxl_fixture(tmp_path_factory.mktemp("ptbxl") / "src", n_ecgs=20, seed=0)


@pytest.fixture
def src(pristine, tmp_path):
    """A private copy of the fixture (tests may damage it)."""
    return shutil.copytree(pristine, tmp_path / "src")


def expected(src, min_likelihood=0.0):
    """ecg_id -> set of superclasses, by hand."""
    db = pd.read_csv(src / "ptbxl_database.csv")
    scp = pd.read_csv(src / "scp_statements.csv", index_col=0)
    diag = scp[scp["diagnostic"] == 1.0]["diagnostic_class"]
    return {int(e): {diag[c] for c, lik in ast.literal_eval(s).items() if c in diag.index and lik >= min_likelihood}
            for e, s in zip(db["ecg_id"], db["scp_codes"])}


def test_superclass_labels_and_binary(pristine, tmp_path):
    out = convert_ptbxl(pristine, tmp_path / "o")
    labels = pd.read_parquet(out / "labels.parquet")
    exp = {str(k): v for k, v in expected(pristine).items() if v}  # unlabelled ECGs dropped
    assert labels["patient_id"].tolist() == sorted(exp, key=int) and len(exp) < 20
    for _, row in labels.iterrows():
        assert {c for c in CLASSES if row[f"label_{c}"] == 1} == exp[row["patient_id"]]
        assert row["binary"] == int("NORM" not in exp[row["patient_id"]])
    assert labels[[f"label_{c}" for c in CLASSES]].sum().min() > 0  # every class occurs
    cohort = Cohort.load(out).fit()
    assert {"binary", *[f"label_{c}" for c in CLASSES]} <= set(cohort.labels.columns)


def test_likelihood_threshold_and_unlabelled(pristine, tmp_path):
    strict = pd.read_parquet(convert_ptbxl(pristine, tmp_path / "a", min_likelihood=50.0) / "labels.parquet")
    exp = {str(k): v for k, v in expected(pristine, 50.0).items() if v}
    assert strict["patient_id"].tolist() == sorted(exp, key=int)
    assert "2" not in set(strict["patient_id"])  # IMI with likelihood 35 only
    kept = pd.read_parquet(convert_ptbxl(pristine, tmp_path / "b", drop_unlabelled=False) / "labels.parquet")
    assert len(kept) == 20
    six = kept.set_index("patient_id").loc["6"]  # {'SR': 0.0}: no diagnostic statement
    assert six[[f"label_{c}" for c in CLASSES]].sum() == 0 and six["binary"] == 1


def test_folds_splits_and_tabular(pristine, tmp_path):
    out = convert_ptbxl(pristine, tmp_path / "o")
    db = pd.read_csv(pristine / "ptbxl_database.csv").set_index("ecg_id")
    splits = pd.read_csv(out / "splits.csv", dtype={"patient_id": str})
    for pid, split in zip(splits["patient_id"], splits["split"]):
        fold = db.loc[int(pid), "strat_fold"]
        assert split == ("train" if fold <= 8 else "val" if fold == 9 else "test")
    assert set(splits["split"]) == {"train", "val", "test"}
    tab = pd.read_parquet(out / "tabular.parquet").set_index("patient_id")
    assert tab.loc["4", "age"] == 90.0 and db.loc[4, "age"] == 300  # the over-89 code
    assert tab.loc["1", "age"] == db.loc[1, "age"]
    assert tab.loc["2", "sex"] == {0: "male", 1: "female"}[db.loc[2, "sex"]]
    assert np.isnan(tab.loc["2", "height"]) and tab.loc["1", "height"] == db.loc[1, "height"]
    reader = Cohort.load(out, ["tabular"]).fit().readers["tabular"]
    assert reader.get("2")["numeric_observed"].tolist() == [True, False, False]  # age, height, weight


@pytest.mark.parametrize("rate", [100, 500])
def test_ecg_records_and_round_trip(pristine, tmp_path, rate):
    out = convert_ptbxl(pristine, tmp_path / "o", sampling_rate=rate)
    rec = pd.read_csv(out / "ecg" / "records.csv", dtype={"patient_id": str}).set_index("patient_id")
    assert rec.loc["1", "record"] == str((pristine / f"records{rate}/00000/00001_{'lr' if rate == 100 else 'hr'}").resolve())
    dm = ClinicalDataModule(root=str(out), batch_size=64)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    k = batch["patient_id"].index("1")
    assert batch["inputs"]["ecg"]["lead_mask"][k].all()  # AVR/AVL/AVF matched to aVR/aVL/aVF
    want = ecg_signal(1, rate)[:, 3] if rate == 100 else resample_poly(ecg_signal(1, 500)[:, 3], 1, 5)
    np.testing.assert_allclose(batch["inputs"]["ecg"]["signal"][k, 3].numpy(), want, atol=2e-3)
    labels = pd.read_parquet(out / "labels.parquet").set_index("patient_id")
    assert batch["labels"]["binary"].tolist() == labels.loc[batch["patient_id"], "binary"].astype(float).tolist()


def test_conversion_cached_and_invalidated(src, tmp_path, capsys):
    out = convert_ptbxl(src, tmp_path / "o")
    mtime = (out / "labels.parquet").stat().st_mtime_ns
    convert_ptbxl(src, out)
    assert "reusing converted cohort" in capsys.readouterr().out
    assert (out / "labels.parquet").stat().st_mtime_ns == mtime
    path = src / "scp_statements.csv"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**10))
    convert_ptbxl(src, out)
    assert (out / "labels.parquet").stat().st_mtime_ns != mtime
    convert_ptbxl(src, out, sampling_rate=500)  # another option: reconverted
    assert "records500" in pd.read_csv(out / "ecg" / "records.csv")["record"].iloc[0]


# ---------------------------------------------------------------------- bad inputs
def edit_db(src, fn):
    path = src / "ptbxl_database.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


@pytest.mark.parametrize("file, column", [("ptbxl_database.csv", "scp_codes"), ("ptbxl_database.csv", "strat_fold"),
                                          ("scp_statements.csv", "diagnostic_class")])
def test_missing_required_column(src, tmp_path, file, column):
    path = src / file
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.drop(columns=[column]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"{file}: missing required column.*'{column}'"):
        convert_ptbxl(src, tmp_path / "o")


@pytest.mark.parametrize("column, value", [("age", "old"), ("patient_id", "p15000"), ("strat_fold", "1.5"),
                                           ("weight", "inf"), ("height", "NaN")])
def test_wrong_dtype_and_nan_inf(src, tmp_path, column, value):
    def fn(df):
        df.loc[4, column] = value
        return df
    edit_db(src, fn)
    with pytest.raises(ValueError, match=rf"ptbxl_database\.csv: column '{column}' has invalid value '{value}' in data row 4 \(ecg_id 5\)"):
        convert_ptbxl(src, tmp_path / "o")


def test_duplicate_ecg_id(src, tmp_path):
    edit_db(src, lambda df: pd.concat([df, df.iloc[[2]]]))
    with pytest.raises(ValueError, match=r"ptbxl_database\.csv: column 'ecg_id' has duplicate id 3"):
        convert_ptbxl(src, tmp_path / "o")


def test_patient_in_two_folds(src, tmp_path):
    def fn(df):
        df.loc[1, "strat_fold"] = "5"  # ecg 2 belongs to patient 15000 (fold 1) with ecg 1
        return df
    edit_db(src, fn)
    with pytest.raises(ValueError, match=r"'strat_fold': patient_id 15000 has ECGs in folds \[1, 5\]"):
        convert_ptbxl(src, tmp_path / "o")


@pytest.mark.parametrize("codes, match", [("{'NORM': 100.0, 'XYZ': 50.0}", r"ecg_id 8 has code 'XYZ' unknown to .*scp_statements"),
                                          ("NORM=100", r"'scp_codes' of ecg_id 8 is not a dict literal")])
def test_unknown_or_unparsable_scp_code(src, tmp_path, codes, match):
    def fn(df):
        df.loc[7, "scp_codes"] = codes
        return df
    edit_db(src, fn)
    with pytest.raises(ValueError, match=match):
        convert_ptbxl(src, tmp_path / "o")


def test_missing_header_warns_and_leaves_ecg_absent(src, tmp_path):
    (src / "records100" / "00000" / "00003_lr.hea").unlink()
    with pytest.warns(UserWarning, match=r"ecg_id 3: WFDB header .*00003_lr\.hea does not exist"):
        out = convert_ptbxl(src, tmp_path / "o")
    cohort = Cohort.load(out).fit()
    assert not cohort.readers["ecg"].has("3") and cohort.readers["tabular"].has("3")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_bad_dat_names_record_and_patient(src, tmp_path, damage):
    out = convert_ptbxl(src, tmp_path / "o")
    dat = src / "records100" / "00000" / "00005_lr.dat"
    dat.unlink() if damage == "missing" else dat.write_bytes(dat.read_bytes()[:700])
    with pytest.raises(ValueError, match=r"00005_lr.*patient 5\)"):
        Cohort.load(out, ["ecg"])
