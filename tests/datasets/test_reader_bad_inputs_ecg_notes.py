"""Bad ECG and notes inputs get a ValueError naming the file, column (or record) and patient,
never silently corrupted or dropped data (tiny cohort of tests/datasets/conftest.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import wfdb

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.ecg import ECGReader
from clinfuse.datasets.ecg_leads import pick_leads

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_records(tiny, rows: list[tuple[str, str, str]]) -> None:
    """Overwrite ``ecg/records.csv`` with ``(patient_id, record, time)`` rows, cells as written."""
    lines = ["patient_id,record,time", *[",".join(row) for row in rows]]
    (tiny.root / "ecg" / "records.csv").write_text("\n".join(lines) + "\n")


def write_record(tiny, name: str, names: list[str], fs: int = 100, seconds: float = 5.0) -> None:
    """A WFDB record ``ecg/<name>`` whose channel ``k`` is a 1 Hz sine of amplitude 0.1 * (k + 1) mV,
    named ``names[k]`` (written into the header afterwards: ``wrsamp`` refuses duplicate names)."""
    t = np.arange(int(fs * seconds)) / fs
    signal = np.stack([0.1 * (k + 1) * np.sin(2 * np.pi * t) for k in range(len(names))], axis=1)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=[f"ch{k}" for k in range(len(names))],
                p_signal=signal, fmt=["16"] * len(names), write_dir=str(tiny.root / "ecg"))
    header = tiny.root / "ecg" / f"{name}.hea"
    first, *channels = header.read_text().splitlines()
    channels = [" ".join([*line.split()[:-1], n]) for line, n in zip(channels, names)]
    header.write_text("\n".join([first, *channels]) + "\n")


# ---------------------------------------------------------------------------- ecg/records.csv
@pytest.mark.parametrize("record", ["", "  "])
def test_ecg_null_record_names_file_column_and_patient(tiny, record):
    write_records(tiny, [("p00", "r_p00", "1.0"), ("p03", record, "2.0"), ("p08", "r_p08", "3.0")])
    with pytest.raises(ValueError, match=r"ecg/records\.csv: column 'record' is null or empty for patient\(s\) \['p03'\]"):
        ECGReader(tiny.root, tiny.labels["patient_id"])


@pytest.mark.parametrize("time", ["", "inf", "-inf", "nan"])
def test_ecg_nan_or_inf_time_names_file_column_and_patient(tiny, time):
    # p03's second record, with a bad time, would sort as the most recent and replace r_p03
    write_record(tiny, "extra", LEADS)
    write_records(tiny, [("p00", "r_p00", "1.0"), ("p03", "r_p03", "2.0"), ("p03", "extra", time),
                         ("p08", "r_p08", "3.0")])
    with pytest.raises(ValueError, match=r"ecg/records\.csv: column 'time' has NaN/inf values for patient\(s\) \['p03'\]"):
        Cohort.load(tiny.root, ["ecg"])


def test_ecg_finite_times_still_keep_the_most_recent_record(tiny):
    write_record(tiny, "extra", LEADS)
    write_records(tiny, [("p00", "r_p00", "1.0"), ("p03", "extra", "5.0"), ("p03", "r_p03", "-1e3")])
    reader = ECGReader(tiny.root, tiny.labels["patient_id"])
    assert reader._records.set_index("patient_id").loc["p03", "record"] == "extra"


# ---------------------------------------------------------------------------- duplicate channel names
@pytest.mark.parametrize(
    ("names", "aliases", "lead"),
    [
        (["I"] * 12, {}, "I"),  # every channel named I
        (["I", "II", "ii", "V1"], {}, "II"),  # the same name up to case
        (["I", "MLII", "ML2", "V1"], {"MLII": "II", "ml2": "II"}, "II"),  # two aliases of one lead
    ],
)
def test_ecg_duplicate_channel_names_name_record_and_patient(tiny, names, aliases, lead):
    write_record(tiny, "r_p03", names)
    with pytest.raises(ValueError, match=rf"r_p03 \(patient p03\): duplicate channel names: \d+ channels give lead {lead}\b"):
        ECGReader(tiny.root, tiny.labels["patient_id"], lead_aliases=aliases)


def test_ecg_duplicates_that_give_no_wanted_lead_or_lose_to_an_exact_name_are_fine(tiny):
    # two channels named X are no lead; MLII -> II loses to the channel named II (as before)
    write_record(tiny, "r_p03", ["I", "MLII", "II", "X", "x"])
    reader = ECGReader(tiny.root, tiny.labels["patient_id"], fs=100.0, seconds=5.0, leads=["I", "II"],
                       lead_aliases={"MLII": "II"}).fit(["p00", "p03"])
    item = reader.get("p03")
    assert item["lead_mask"].tolist() == [True, True]
    t = np.arange(500) / 100
    np.testing.assert_allclose(item["signal"][1], 0.3 * np.sin(2 * np.pi * t), atol=1e-3)  # channel 2, not MLII


def test_in_memory_ecg_with_duplicate_lead_names_names_the_field():
    from clinfuse.experiments.raw_signals import ecg_item

    state = {"config": {"leads": ["I", "II", "V1"], "fs": 100.0}, "fitted": {"n_samples": 500}}
    raw = {"signal": np.zeros((3, 1000)).tolist(), "fs": 200, "leads": ["I", "ii", "II"]}
    with pytest.raises(ValueError, match=r"^field 'ecg': duplicate channel names: 2 channels give lead II.*1 'ii', 2 'II'"):
        ecg_item(state, raw, "p1")
    with pytest.raises(ValueError, match=r"^signal x: duplicate channel names: 2 channels give lead V1"):
        pick_leads(np.zeros((10, 2)), ["V1", "v1"], ["mV", "uV"], 100.0, ["V1"], where="signal x")


# ---------------------------------------------------------------------------- notes.parquet
def write_binary_notes(tiny, texts: list[bytes]) -> None:
    """``notes.parquet`` with a ``binary`` (not UTF-8 string) ``text`` column."""
    notes = tiny.notes
    table = pa.table({"patient_id": notes["patient_id"], "time": notes["time"],
                      "text": pa.array(texts, type=pa.binary())})
    pq.write_table(table, tiny.root / "notes.parquet")


def test_notes_binary_text_is_decoded_as_utf8(tiny):
    texts = tiny.notes["text"].tolist()
    texts[6] = "Fièvre 39 degrees."  # p05
    pd.DataFrame({**tiny.notes, "text": texts}).to_parquet(tiny.root / "notes.parquet", index=False)
    as_text = Cohort.load(tiny.root, ["notes"], notes={"min_patients": 1}).fit().readers["notes"]
    write_binary_notes(tiny, [t.encode("utf-8") for t in texts])
    as_bytes = Cohort.load(tiny.root, ["notes"], notes={"min_patients": 1}).fit().readers["notes"]
    assert as_bytes._texts["p05"] == ["Fièvre 39 degrees."]
    assert as_bytes.state_dict()["fitted"] == as_text.state_dict()["fitted"]
    for pid in as_text.patient_ids:
        np.testing.assert_array_equal(as_bytes.get(pid)["token_ids"], as_text.get(pid)["token_ids"])


def test_notes_binary_text_not_utf8_names_file_column_and_patient(tiny):
    texts = [t.encode("utf-8") for t in tiny.notes["text"]]
    texts[5] = "Stable, fièvre.".encode("latin-1")  # p04
    write_binary_notes(tiny, texts)
    with pytest.raises(ValueError, match=r"notes\.parquet: column 'text' holds bytes that are not valid UTF-8 for patient\(s\) \['p04'\]"):
        Cohort.load(tiny.root, ["notes"])
