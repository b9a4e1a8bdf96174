"""Every modality reader against the tiny hand-written cohort (tests/datasets/conftest.py)."""

from __future__ import annotations

import os
import shutil
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly

import clinfuse.datasets.ecg as ecg_module
from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.ecg import ECGReader

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def fitted(tiny, modality, **kwargs):
    """The fitted reader of one modality of the tiny cohort."""
    if modality == "notes":  # 8 train patients: the vocabulary threshold has its own tests
        kwargs.setdefault("min_patients", 1)
    return Cohort.load(tiny.root, [modality], **{modality: kwargs}).fit().readers[modality]


def sine(fs, n, k):
    """Lead ``k`` as written by conftest.write_ecg: a 1 Hz sine of amplitude 0.1 * (k + 1)."""
    return np.sin(2 * np.pi * np.arange(n) / fs) * 0.1 * (k + 1)


# ---------------------------------------------------------------------------- tabular
def test_tabular_values_and_dtypes(tiny):
    reader = fitted(tiny, "tabular")
    train_age = np.array([60.0, np.nan, 70.0, 50.0, 80.0, 40.0, 65.0])  # p00-p05, p07 by hand
    mean, std = np.nanmean(train_age), np.nanstd(train_age)
    p00, p01, p02, p10 = (reader.get(p) for p in ("p00", "p01", "p02", "p10"))
    assert p00["numeric"].dtype == np.float32 and p00["numeric"].shape == (2,)
    assert p00["numeric_observed"].dtype == np.bool_ and p00["categorical"].dtype == np.int64
    assert p00["numeric"][0] == pytest.approx((60.0 - mean) / std, rel=1e-5)
    assert p01["numeric"][0] == 0.0 and not p01["numeric_observed"][0] and p01["numeric_observed"][1]
    # sex levels F=2, M=3; ward levels ed=2, icu=3, ward=4; null -> 0, unseen "burns" -> 1
    assert p00["categorical"].tolist() == [2, 3] and p02["categorical"].tolist() == [0, 2]
    assert p10["categorical"].tolist() == [3, 1]
    assert reader.spec()["categorical_cardinalities"] == [4, 5]
    assert reader.get("p09") is None and reader.get("p06") is None


def test_tabular_stats_from_train_only(tiny):
    before = fitted(tiny, "tabular").state_dict()
    df = tiny.tabular.copy()
    df.loc[df["patient_id"].isin(["p08", "p10"]), "age"] = 1000.0
    df.loc[df["patient_id"] == "p10", "ward"] = "newward"
    df.to_parquet(tiny.root / "tabular.parquet", index=False)
    assert fitted(tiny, "tabular").state_dict() == before
    df.loc[df["patient_id"] == "p00", "age"] = 1000.0  # a train patient does move the stats
    df.to_parquet(tiny.root / "tabular.parquet", index=False)
    assert fitted(tiny, "tabular").state_dict() != before


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda df: df.drop(columns="patient_id"), r"tabular\.parquet.*patient_id"),
        (lambda df: pd.concat([df, df.iloc[[3]]]), r"tabular\.parquet.*duplicate.*p03"),
        (lambda df: df.assign(patient_id=df["patient_id"].replace("p11", "zz")), r"tabular\.parquet.*zz.*labels"),
        (lambda df: df.assign(age=df["age"].where(df["patient_id"] != "p04", np.inf)), r"tabular\.parquet.*'age'.*p04"),
    ],
)
def test_tabular_bad_inputs(tiny, edit, match):
    edit(tiny.tabular).to_parquet(tiny.root / "tabular.parquet", index=False)
    with pytest.raises(ValueError, match=match):
        Cohort.load(tiny.root, ["tabular"])


# ---------------------------------------------------------------------------- timeseries
def test_timeseries_sorted_and_normalised_on_train(tiny):
    reader = fitted(tiny, "timeseries")
    assert reader.spec()["variables"] == ["hr", "sbp"]
    train = tiny.timeseries[tiny.timeseries["patient_id"].isin(tiny.train)]
    stats = train.groupby("variable")["value"].agg(["mean", lambda v: v.std(ddof=0)])
    expected = tiny.timeseries[tiny.timeseries["patient_id"] == "p11"].sort_values("time")
    item = reader.get("p11")
    assert item["times"].dtype == np.float32 and item["variables"].dtype == np.int64
    np.testing.assert_allclose(item["times"], expected["time"])
    np.testing.assert_array_equal(item["variables"], (expected["variable"] == "sbp").astype(int))
    mean = stats.iloc[:, 0].loc[expected["variable"]].to_numpy()
    std = stats.iloc[:, 1].loc[expected["variable"]].to_numpy()
    np.testing.assert_allclose(item["values"], (expected["value"].to_numpy() - mean) / std, rtol=1e-5)
    assert reader.get("p10") is None and reader.get("p06") is None


def test_timeseries_keeps_most_recent_events(tiny):
    item = fitted(tiny, "timeseries", max_events=3).get("p11")
    all_times = np.sort(tiny.timeseries.loc[tiny.timeseries["patient_id"] == "p11", "time"].to_numpy())
    np.testing.assert_allclose(item["times"], all_times[-3:])


def test_timeseries_stats_from_train_only_and_unseen_variable(tiny):
    before = fitted(tiny, "timeseries").state_dict()
    df = tiny.timeseries.copy()
    df.loc[df["patient_id"] == "p11", "value"] += 500.0
    extra = pd.DataFrame([("p08", 1.0, "temp", 37.0)], columns=df.columns)
    pd.concat([df, extra]).to_parquet(tiny.root / "timeseries.parquet", index=False)
    with pytest.warns(UserWarning, match="temp"):
        reader = fitted(tiny, "timeseries")
    assert reader.state_dict() == before
    assert len(reader.get("p08")["times"]) == (tiny.timeseries["patient_id"] == "p08").sum()  # "temp" dropped


@pytest.mark.parametrize(
    "column, value, match",
    [
        ("value", np.nan, r"timeseries\.parquet.*'value'.*p03"),
        ("value", np.inf, r"timeseries\.parquet.*'value'.*p03"),
        ("time", -np.inf, r"timeseries\.parquet.*'time'.*p03"),
        ("time", "yesterday", r"timeseries\.parquet.*'time'.*non-numeric.*p03"),
    ],
)
def test_timeseries_bad_values(tiny, column, value, match):
    df = tiny.timeseries.copy()
    if isinstance(value, str):
        df[column] = df[column].astype(str)
    df.loc[df.index[df["patient_id"] == "p03"][0], column] = value
    df.to_parquet(tiny.root / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=match):
        Cohort.load(tiny.root, ["timeseries"])


def test_timeseries_missing_column_and_unknown_patient(tiny):
    tiny.timeseries.drop(columns="variable").to_parquet(tiny.root / "timeseries.parquet", index=False)
    with pytest.raises(ValueError, match=r"timeseries\.parquet.*'variable'"):
        Cohort.load(tiny.root, ["timeseries"])
    tiny.timeseries.replace({"patient_id": {"p00": "ghost"}}).to_parquet(tiny.root / "timeseries.parquet")
    with pytest.raises(ValueError, match=r"timeseries\.parquet.*ghost"):
        Cohort.load(tiny.root, ["timeseries"])


# ---------------------------------------------------------------------------- ecg
def test_ecg_resampled_selected_cropped_padded(tiny):
    with pytest.warns(UserWarning, match=r"records\.csv: 1 of 3 ECG records are shorter than the 10 s window "
                                         r"\(shortest 6 s\) and are zero-padded at the end: patient\(s\) \['p08'\]"):
        reader = fitted(tiny, "ecg")
    with pytest.warns(UserWarning, match=r"1 of 3 ECG records are shorter"):  # again from the cache
        fitted(tiny, "ecg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 6 s window: no record is short (p03 is cropped, not noted)
        fitted(tiny, "ecg", seconds=6.0)
    assert reader.spec() == {"leads": LEADS, "fs": 100.0, "n_samples": 1000}
    p00, p03, p08 = (reader.get(p) for p in ("p00", "p03", "p08"))
    assert p00["signal"].shape == (12, 1000) and p00["signal"].dtype == np.float32
    for k in range(12):  # 500 Hz -> 100 Hz; interior away from the filter's edge effects
        np.testing.assert_allclose(p00["signal"][k, 50:950], sine(100, 1000, k)[50:950], atol=5e-3)
    # p03: 100 Hz, 12 s, no V6, leads stored in another order: selected by name, cropped to 10 s
    assert p03["lead_mask"].tolist() == [True] * 11 + [False]
    assert not p03["signal"][11].any()
    for k in range(11):
        np.testing.assert_allclose(p03["signal"][k], sine(100, 1000, k), atol=1e-3)
    # p08: 6 s at 250 Hz -> 600 samples then zero padding
    assert not p08["signal"][:, 600:].any() and np.abs(p08["signal"][:, 100:500]).max() > 0.05
    assert reader.get("p01") is None


def test_ecg_real_physionet_record(tiny, ecg_data_dir):
    for suffix in ("hea", "dat", "xyz"):
        shutil.copy(ecg_data_dir / f"s0010_re.{suffix}", tiny.root / "ecg" / f"s0010_re.{suffix}")
    pd.DataFrame({"patient_id": ["p05"], "record": ["s0010_re"], "time": [0.0]}).to_csv(
        tiny.root / "ecg" / "records.csv", index=False
    )
    raw = wfdb.rdrecord(str(ecg_data_dir / "s0010_re"))
    names = [n.lower() for n in raw.sig_name]
    for leads in (LEADS, ["V6", "I", "aVR"]):
        reader = ECGReader(tiny.root, tiny.labels["patient_id"], fs=100.0, leads=leads).fit(["p05"])
        item = reader.get("p05")
        assert item["signal"].shape == (len(leads), 1000) and item["lead_mask"].all()
        for k, lead in enumerate(leads):
            expected = resample_poly(raw.p_signal[:, names.index(lead.lower())], 1, 10)[:1000]
            np.testing.assert_allclose(item["signal"][k], expected, atol=1e-4)


def test_ecg_cache_reused_and_invalidated(tiny, monkeypatch):
    first = fitted(tiny, "ecg").get("p00")["signal"]
    assert list((tiny.root / ".clinfuse_cache").glob("ecg_*.npy"))

    def forbidden(*args, **kwargs):
        raise AssertionError("a record read although the cache is valid")

    monkeypatch.setattr(ecg_module, "read_wfdb", forbidden)
    np.testing.assert_array_equal(fitted(tiny, "ecg").get("p00")["signal"], first)
    monkeypatch.undo()

    calls = []
    real = ecg_module.read_wfdb
    monkeypatch.setattr(ecg_module, "read_wfdb", lambda *a, **k: calls.append(a) or real(*a, **k))
    signal = np.stack([sine(500, 5000, k) * 3 for k in range(12)], axis=1)  # a changed recording
    wfdb.wrsamp("r_p00", fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(tiny.root / "ecg"))
    dat = tiny.root / "ecg" / "r_p00.dat"
    os.utime(dat, ns=(dat.stat().st_atime_ns, dat.stat().st_mtime_ns + 10**10))  # coarse-mtime filesystems
    changed = fitted(tiny, "ecg").get("p00")["signal"]
    assert len(calls) == 3
    np.testing.assert_allclose(changed[:, 50:950], first[:, 50:950] * 3, atol=1e-2)
    fitted(tiny, "ecg", fs=50.0)  # another rate: another cache entry
    assert len(calls) == 6


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_ecg_bad_dat_names_record_and_patient(tiny, damage):
    dat = tiny.root / "ecg" / "r_p03.dat"
    if damage == "missing":
        dat.unlink()
    else:
        dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"r_p03.*p03"):
        Cohort.load(tiny.root, ["ecg"])


def test_ecg_missing_column(tiny):
    pd.DataFrame({"patient_id": ["p00"], "time": [1.0]}).to_csv(tiny.root / "ecg" / "records.csv", index=False)
    with pytest.raises(ValueError, match=r"records\.csv.*'record'"):
        Cohort.load(tiny.root, ["ecg"])


# ---------------------------------------------------------------------------- notes
def test_notes_tokens_vocab_and_caps(tiny):
    reader = fitted(tiny, "notes")
    # train counts: sepsis 4 (p00 x2, p02 x2), stable 3 (p00 x2, p04) -> ids 2, 3
    p00, p08 = reader.get("p00"), reader.get("p08")
    np.testing.assert_allclose(p00["note_times"], [1.0, 2.0, 30.0])
    assert p00["token_ids"].dtype == np.int64 and p00["token_ids"].shape == (3, 5)
    assert p00["token_ids"][0, 2:4].tolist() == [2, 2]  # "Admitted with sepsis, sepsis likely."
    assert p00["token_mask"][2].tolist() == [True, True, True, False, False]
    assert p08["token_ids"].tolist() == [[1, 1, 3]]  # zebra/unseenword unknown (val only), stable
    assert reader.get("p03") is None
    capped = fitted(tiny, "notes", max_notes=2, max_words=2).get("p00")
    np.testing.assert_allclose(capped["note_times"], [2.0, 30.0])
    assert capped["token_ids"].shape == (2, 2) and capped["token_mask"].all()


def test_notes_vocab_from_train_only(tiny):
    before = fitted(tiny, "notes").state_dict()
    df = tiny.notes.copy()
    df.loc[df["patient_id"] == "p10", "text"] = "brandnew brandnew brandnew words"
    df.to_parquet(tiny.root / "notes.parquet", index=False)
    assert fitted(tiny, "notes").state_dict() == before


@pytest.mark.parametrize("column, value, match", [("text", None, r"'text'.*p02"), ("time", "noon", r"'time'.*p02")])
def test_notes_bad_inputs(tiny, column, value, match):
    df = tiny.notes.astype({column: str})
    df.loc[df["patient_id"] == "p02", column] = value
    df.to_parquet(tiny.root / "notes.parquet", index=False)
    with pytest.raises(ValueError, match=r"notes\.parquet.*" + match):
        Cohort.load(tiny.root, ["notes"])


# ---------------------------------------------------------------------------- wsi
def test_wsi_concatenates_slides_and_samples(tiny):
    reader = fitted(tiny, "wsi", max_patches=10)
    assert reader.spec() == {"feature_dim": 4}
    with h5py.File(tiny.root / "wsi" / "s0a.h5") as a, h5py.File(tiny.root / "wsi" / "s0b.h5") as b:
        bag = np.concatenate([a["features"][()], b["features"][()]])
    with h5py.File(tiny.root / "wsi" / "s11.h5") as fh:
        bag11 = fh["features"][()]
    np.testing.assert_array_equal(reader.get("p02")["features"].shape, (3, 4))
    sub = reader.get("p00")["features"]
    assert sub.shape == (10, 4) and sub.dtype == np.float32
    assert all(any(np.array_equal(row, ref) for ref in bag) for row in sub)
    eval_a, eval_b = reader.get("p11")["features"], fitted(tiny, "wsi", max_patches=10).get("p11")["features"]
    np.testing.assert_array_equal(eval_a, eval_b)  # deterministic per patient in eval mode
    assert all(any(np.array_equal(row, ref) for ref in bag11) for row in eval_a)
    train_draws = {reader.get("p11", training=True)["features"].tobytes() for _ in range(5)}
    assert len(train_draws) > 1
    assert reader.get("p01") is None


def test_wsi_corrupt_and_missing_slides(tiny):
    reader = fitted(tiny, "wsi")
    (tiny.root / "wsi" / "s2.h5").write_bytes(b"this is not an hdf5 file")
    with pytest.raises(ValueError, match=r"s2\.h5.*p02"):  # read lazily: found when the patient is read
        reader.get("p02")
    with pytest.raises(ValueError, match=r"s2\.h5.*p02"):  # p02 trains: fitting the feature statistics finds it
        fitted(tiny, "wsi")
    (tiny.root / "wsi" / "s11.h5").unlink()
    with pytest.raises(ValueError, match=r"s11\.h5.*p11"):
        Cohort.load(tiny.root, ["wsi"])


# ---------------------------------------------------------------------------- genomics
def test_genomics_values_and_groups(tiny):
    reader = fitted(tiny, "genomics")
    assert reader.spec() == {"genes": ["TP53", "EGFR", "KRAS"], "mutations": ["TP53", "KRAS"],
                             "gene_groups": {"apoptosis": [0], "growth": [1, 2]}}
    # train TP53 = 1..7: mean 4, population std 2; KRAS is constant -> 0
    p00, p08 = reader.get("p00"), reader.get("p08")
    assert p00["expression"].dtype == np.float32 and p00["expression"][0] == pytest.approx(-1.5)
    assert p00["expression"][2] == 0.0 and p08["expression"][0] == pytest.approx(48.0)
    assert p00["mutations"].tolist() == [0.0, 1.0]
    assert reader.get("p10") is None


@pytest.mark.parametrize("column, value, match", [("KRAS_mut", 2, r"'KRAS_mut'.*p04"),
                                                  ("EGFR_rnaseq", np.nan, r"'EGFR_rnaseq'.*p04")])
def test_genomics_bad_values(tiny, column, value, match):
    df = tiny.genomics.astype({column: float})
    df.loc[df["patient_id"] == "p04", column] = value
    df.to_csv(tiny.root / "genomics.csv", index=False)
    with pytest.raises(ValueError, match=r"genomics\.csv.*" + match):
        Cohort.load(tiny.root, ["genomics"])


def test_ecg_record_without_requested_leads(tiny):
    with pytest.raises(ValueError, match=r"r_p00.*p00.*none of the leads"):
        fitted(tiny, "ecg", leads=["X1", "Y2"])


def test_oracle_with_nan_risk_is_refused_naming_the_patient(tiny):
    ids = pd.read_parquet(tiny.root / "labels.parquet")["patient_id"].tolist()
    risk = np.linspace(-1, 1, len(ids))
    pd.DataFrame({"patient_id": ids, "risk_full": risk}).to_parquet(tiny.root / "oracle.parquet")
    assert Cohort.load(tiny.root, ["tabular"]).oracle["risk_full"].tolist() == risk.tolist()
    risk[2] = np.nan
    pd.DataFrame({"patient_id": ids, "risk_full": risk}).to_parquet(tiny.root / "oracle.parquet")
    with pytest.raises(ValueError, match=rf"oracle\.parquet.*'risk_full'.*{ids[2]}"):
        Cohort.load(tiny.root, ["tabular"])


def test_cohort_modalities_argument_and_empty_train_split(tiny):
    with pytest.raises(TypeError, match=r"modalities must be a list of modality names .* got 'tabular'"):
        Cohort.load(tiny.root, "tabular")
    with pytest.raises(ValueError, match=r"no modality to load \(modalities=\[\]"):
        Cohort.load(tiny.root, [])
    splits = pd.read_csv(tiny.root / "splits.csv")
    splits["split"] = "test"
    splits.to_csv(tiny.root / "splits.csv", index=False)
    cohort = Cohort.load(tiny.root, ["tabular"])  # an all-test cohort still loads (scored by a trained model)
    with pytest.raises(ValueError, match=r"splits\.csv: no patient is in the train split \(\{'train': 0"):
        cohort.fit()
