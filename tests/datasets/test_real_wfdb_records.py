"""Real PhysioNet WFDB records (``shared/data/ecg``) through a cohort folder with absolute record paths.

References are computed here with ``wfdb.rdrecord`` + ``scipy.signal.resample_poly``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.datamodule import ClinicalDataModule

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real records folder {DATA} not found")


@pytest.fixture
def cohort_root(tmp_path):
    """labels + splits + ecg/records.csv pointing at the real records by absolute path."""
    ids = ["ptb", "mitbih", "alarm"]
    pd.DataFrame({"patient_id": ids, "binary": [1, 0, 1]}).to_parquet(tmp_path / "labels.parquet", index=False)
    pd.DataFrame({"patient_id": ids, "split": ["train", "val", "test"]}).to_csv(tmp_path / "splits.csv", index=False)
    (tmp_path / "ecg").mkdir()
    pd.DataFrame({"patient_id": ids, "record": [str(DATA / r) for r in ("s0010_re", "100", "a103l")],
                  "time": [0.0, 0.0, 0.0]}).to_csv(tmp_path / "ecg" / "records.csv", index=False)
    return tmp_path


def load(root, **ecg):
    reader = Cohort.load(root, ["ecg"], ecg={"fs": 100.0, "seconds": 10.0, **ecg}).readers["ecg"]
    return reader.fit(["ptb", "mitbih", "alarm"])


def keep_only(root, patient_id):
    """Keep one row of ecg/records.csv (a record lacking every requested lead is an error)."""
    records = pd.read_csv(root / "ecg" / "records.csv")
    records[records["patient_id"] == patient_id].to_csv(root / "ecg" / "records.csv", index=False)


def reference(record: str, channel: str, up: int, down: int) -> np.ndarray:
    raw = wfdb.rdrecord(str(DATA / record))
    j = [n.lower() for n in raw.sig_name].index(channel.lower())
    return resample_poly(raw.p_signal[:, j], up, down)[:1000]


def test_ptb_12_leads_plus_frank_at_1000_hz(cohort_root):
    header = wfdb.rdheader(str(DATA / "s0010_re"))
    assert header.fs == 1000 and "age: 81" in header.comments[0]  # the clinical header is intact
    item = load(cohort_root).get("ptb")
    assert item["lead_mask"].all() and item["signal"].shape == (12, 1000)
    for k, lead in enumerate(LEADS):
        np.testing.assert_allclose(item["signal"][k], reference("s0010_re", lead, 1, 10), atol=1e-4)
    with pytest.raises(ValueError, match=r"a103l \(patient alarm\): none of the leads"):
        load(cohort_root, leads=["vx", "VY", "vz"])  # the alarm record has no Frank lead
    keep_only(cohort_root, "ptb")
    frank = load(cohort_root, leads=["vx", "VY", "vz"]).get("ptb")  # channels of the second file (.xyz)
    for k, lead in enumerate(["vx", "vy", "vz"]):
        np.testing.assert_allclose(frank["signal"][k], reference("s0010_re", lead, 1, 10), atol=1e-4)


def test_mitbih_212_at_360_hz_mlii_alias(cohort_root):
    plain = load(cohort_root).get("mitbih")
    assert plain["lead_mask"].tolist() == [lead == "V5" for lead in LEADS]  # MLII is not lead II by default
    item = load(cohort_root, lead_aliases={"MLII": "II"}).get("mitbih")
    assert item["lead_mask"].tolist() == [lead in ("II", "V5") for lead in LEADS]
    np.testing.assert_allclose(item["signal"][1], reference("100", "MLII", 5, 18), atol=1e-4)  # 100/360 = 5/18
    np.testing.assert_allclose(item["signal"][10], reference("100", "V5", 5, 18), atol=1e-4)
    np.testing.assert_allclose(item["signal"][10], plain["signal"][10])
    assert not item["signal"][~item["lead_mask"]].any()


def test_alarm_mat_record_skips_pleth(cohort_root):
    item = load(cohort_root).get("alarm")
    assert item["lead_mask"].tolist() == [lead == "II" for lead in LEADS]  # "V" is no standard lead
    np.testing.assert_allclose(item["signal"][1], reference("a103l", "II", 2, 5), atol=1e-4)  # 250 -> 100 Hz
    keep_only(cohort_root, "alarm")
    custom = load(cohort_root, leads=["II", "V", "PLETH"]).get("alarm")
    assert custom["lead_mask"].tolist() == [True, True, False]  # PLETH (unit NU) is never an ECG lead
    np.testing.assert_allclose(custom["signal"][1], reference("a103l", "V", 2, 5), atol=1e-4)
    assert not custom["signal"][2].any()


def test_real_records_through_the_data_module(cohort_root):
    dm = ClinicalDataModule(root=str(cohort_root), modalities=["ecg"], batch_size=4)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["patient_id"] == ["mitbih"]
    assert batch["inputs"]["ecg"]["lead_mask"][0].tolist() == [lead == "V5" for lead in LEADS]
    np.testing.assert_allclose(batch["inputs"]["ecg"]["signal"][0, 10].numpy(), reference("100", "V5", 5, 18), atol=1e-4)
