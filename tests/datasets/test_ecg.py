"""ECGReader on hand-written WFDB records: lead names, resampling, masks, aliases, memory-mapped cache."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb
from scipy.signal import resample_poly

import clinfuse.datasets.ecg as ecg_module
from clinfuse.datasets.ecg import ECGReader

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def sine(fs: float, n: int, k: int) -> np.ndarray:
    """Channel ``k``: a 1 Hz sine of amplitude 0.1 * (k + 1) mV."""
    return 0.1 * (k + 1) * np.sin(2 * np.pi * np.arange(n) / fs)


def write(folder, name, fs, names, seconds=6.0, units=None):
    signal = np.stack([sine(fs, int(fs * seconds), k) for k in range(len(names))], axis=1)
    wfdb.wrsamp(name, fs=fs, units=units or ["mV"] * len(names), sig_name=names, p_signal=signal,
                fmt=["16"] * len(names), write_dir=str(folder))
    return signal


@pytest.fixture
def root(tmp_path):
    """A cohort folder whose ``ecg/`` holds records at 360, 500 and 1000 Hz with odd lead names."""
    (tmp_path / "ecg").mkdir()
    write(tmp_path / "ecg", "r360", 360, ["ii", "AVR", "v5"])  # lower/upper case, 3 leads only
    write(tmp_path / "ecg", "r500", 500, ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"])
    write(tmp_path / "ecg", "r1000", 1000, ["MLII", "V1", "PLETH"], units=["mV", "uV", "NU"])
    pd.DataFrame({"patient_id": ["a", "b", "c"], "record": ["r360", "r500", "r1000"], "time": [0.0] * 3}).to_csv(
        tmp_path / "ecg" / "records.csv", index=False)
    return tmp_path


def reader(root, **kwargs):
    return ECGReader(root, None, fs=100.0, seconds=5.0, **kwargs).fit(["a", "b", "c"])


def test_leads_by_name_case_insensitive_and_resampled(root):
    r = reader(root)
    a, b = r.get("a"), r.get("b")
    # 360 Hz record: ii, AVR, v5 -> II, aVR, V5; every other lead masked (not zero-and-kept)
    assert a["lead_mask"].tolist() == [lead in ("II", "aVR", "V5") for lead in LEADS]
    for k, lead in ((0, "II"), (1, "aVR"), (2, "V5")):
        expected = resample_poly(sine(360, 2160, k), 5, 18)[:500]  # 100/360 = 5/18
        np.testing.assert_allclose(a["signal"][LEADS.index(lead)], expected, atol=1e-4)
        np.testing.assert_allclose(a["signal"][LEADS.index(lead), 25:475], sine(100, 500, k)[25:475], atol=5e-3)
    assert not a["signal"][~a["lead_mask"]].any()
    # 500 Hz record with PTB-XL style upper-case AVR/AVL/AVF: all 12 found, in LEADS order
    assert b["lead_mask"].all()
    for k in range(12):
        np.testing.assert_allclose(b["signal"][k], resample_poly(sine(500, 3000, k), 1, 5)[:500], atol=1e-4)


def test_non_voltage_channel_never_a_lead_and_units_to_mv(root):
    r = reader(root, leads=["II", "V1", "PLETH"])
    c = r.get("c")
    assert c["lead_mask"].tolist() == [False, True, False]  # MLII has no alias; PLETH is in NU, not a lead
    # V1 was stored in uV: converted to mV (x 1e-3), then 1000 -> 100 Hz
    np.testing.assert_allclose(c["signal"][1], resample_poly(sine(1000, 6000, 1), 1, 10)[:500] * 1e-3, atol=1e-6)
    aliased = reader(root, leads=["II", "V1", "PLETH"], lead_aliases={"mlii": "II"}).get("c")
    assert aliased["lead_mask"].tolist() == [True, True, False]
    np.testing.assert_allclose(aliased["signal"][0], resample_poly(sine(1000, 6000, 0), 1, 10)[:500], atol=1e-4)


def test_exact_lead_name_wins_over_alias(tmp_path):
    (tmp_path / "ecg").mkdir()
    write(tmp_path / "ecg", "r", 100, ["MLII", "II"])  # channel 1 (amplitude 0.2) is the real lead II
    pd.DataFrame({"patient_id": ["a"], "record": ["r"], "time": [0.0]}).to_csv(tmp_path / "ecg" / "records.csv")
    item = ECGReader(tmp_path, None, fs=100.0, seconds=5.0, leads=["II"], lead_aliases={"MLII": "II"}).fit(["a"]).get("a")
    np.testing.assert_allclose(item["signal"][0], sine(100, 500, 1), atol=1e-4)


def test_collate_masks_missing_leads(root):
    r = reader(root)
    batch = r.collate([r.get("a"), None, r.get("b")])
    assert batch["signal"].shape == (3, 12, 500) and batch["present"].tolist() == [True, False, True]
    assert batch["lead_mask"][0].sum() == 3 and not batch["lead_mask"][1].any() and batch["lead_mask"][2].all()
    assert not batch["signal"][~batch["lead_mask"]].any()


def test_cache_is_memory_mapped_and_not_pickled(root):
    r = reader(root)
    first = r.get("b")["signal"]
    np.testing.assert_array_equal(np.load(r._cache_file)[1], first)
    assert isinstance(r._mmap, np.memmap) and not r._mmap.flags.writeable
    blob = pickle.dumps(r)
    assert len(blob) < 3 * 12 * 500 * 4 // 2  # the (3, 12, 500) float32 signals are not in the pickle
    np.testing.assert_array_equal(pickle.loads(blob).get("b")["signal"], first)


def test_no_cache_reads_per_patient(root, monkeypatch):
    cached = reader(root).get("a")["signal"]
    calls = []
    real = ecg_module.read_wfdb
    monkeypatch.setattr(ecg_module, "read_wfdb", lambda *a, **k: calls.append(str(a[0])) or real(*a, **k))
    r = reader(root, cache=False)
    assert len(calls) == 6  # every record validated once up front, and read once by fit's amplitude statistic
    np.testing.assert_array_equal(r.get("a")["signal"], cached)
    assert len(calls) == 7 and calls[-1].endswith("r360")


def test_unwritable_cache_warns_and_reads_per_patient(root, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(ecg_module.np.lib.format, "open_memmap", refuse)
    with pytest.warns(UserWarning, match="cannot write the ECG cache"):
        r = reader(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r.get("b")["lead_mask"].all()
    assert not list((root / ".clinfuse_cache").glob("*.tmp.npy"))


def test_state_round_trip_keeps_aliases(root):
    r = reader(root, lead_aliases={"MLII": "II"})
    restored = ECGReader.from_state(root, r.state_dict())
    assert restored.lead_aliases == {"MLII": "II"}
    assert torch.equal(r.collate([r.get("c")])["signal"], restored.collate([restored.get("c")])["signal"])


@pytest.fixture
def many(tmp_path):
    """60 records (more than one chunk, enough for worker processes), patient p07 with 2 leads only."""
    (tmp_path / "ecg").mkdir()
    ids = [f"p{i:02d}" for i in range(60)]
    for i, pid in enumerate(ids):
        write(tmp_path / "ecg", pid, 250 + 50 * (i % 3), ["I", "V2"] if pid == "p07" else LEADS, seconds=2.0)
    pd.DataFrame({"patient_id": ids, "record": ids, "time": [0.0] * 60}).to_csv(tmp_path / "ecg" / "records.csv", index=False)
    return tmp_path, ids


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cache_build_in_chunks_and_workers_equals_one_record_at_a_time(many, monkeypatch, workers):
    root, ids = many
    monkeypatch.setenv("CLINFUSE_WORKERS", workers)
    monkeypatch.setattr(ecg_module, "CACHE_CHUNK", 16)  # 4 chunks
    r = ECGReader(root, None, fs=100.0, seconds=2.0).fit(ids)
    for i, pid in enumerate(ids):  # every row holds its own patient's record
        want, mask = ecg_module.read_ecg_record(root / "ecg" / pid, pid, LEADS, 100.0, 200, {})
        item = r.get(pid)
        np.testing.assert_array_equal(item["signal"], want)
        np.testing.assert_array_equal(item["lead_mask"], mask)
    assert r.get("p07")["lead_mask"].sum() == 2 and r.get("p08")["lead_mask"].all()


def test_a_bad_record_in_a_worker_names_file_and_patient(many, monkeypatch):
    root, ids = many
    monkeypatch.setenv("CLINFUSE_WORKERS", "2")
    (root / "ecg" / "p41.dat").write_bytes(b"\x00" * 10)  # truncated signal file
    with pytest.raises(ValueError, match=r"p41\.hea/\.dat \(patient p41\): cannot read WFDB record"):
        ECGReader(root, None, fs=100.0, seconds=2.0)
    assert not list((root / ".clinfuse_cache").glob("*.tmp.*"))  # the half-written cache is gone


def test_fitted_amplitude_is_the_median_lead_sd_of_the_training_records(root):
    r = reader(root)
    sds = np.concatenate([r.get(p)["signal"][r.get(p)["lead_mask"]].std(axis=1) for p in ("a", "b", "c")])
    assert r.state_dict()["fitted"]["amplitude_mv"] == pytest.approx(float(np.median(sds)))
    only_a = ECGReader(root, None, fs=100.0, seconds=5.0).fit(["a"])
    assert only_a.state_dict()["fitted"]["amplitude_mv"] == pytest.approx(float(np.median(r.get("a")["signal"][r.get("a")["lead_mask"]].std(axis=1))))
