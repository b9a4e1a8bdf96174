"""The fast WFDB path (one-file format-16 records) against wfdb.rdrecord, and what it leaves to wfdb."""

from pathlib import Path

import numpy as np
import pytest
import wfdb

from clinfuse.datasets.wfdb_read import read_format16, read_wfdb

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "ecg"


def _assert_same(got, path):
    want = wfdb.rdrecord(str(path))
    np.testing.assert_array_equal(got.p_signal, want.p_signal)  # NaN where wfdb has NaN
    assert got.p_signal.dtype == want.p_signal.dtype == np.float64
    assert got.fs == want.fs and got.sig_len == want.sig_len
    assert got.sig_name == want.sig_name and got.units == want.units


def _record(tmp_path, lines, digital, name="rec", comments=()):
    """A header from ``lines`` (signal lines after the record line) and ``digital`` (S, C) as int16."""
    digital = np.asarray(digital, dtype="<i2")
    (tmp_path / f"{name}.dat").write_bytes(digital.tobytes())
    body = [*comments, *lines]
    (tmp_path / f"{name}.hea").write_text("\n".join(body) + "\n")
    return tmp_path / name


def test_a_record_written_by_wfdb_reads_as_wfdb_reads_it(tmp_path):
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 0.5, size=(1000, 12))
    signal[100:110, 3] = np.nan  # written as the invalid value, read back as NaN
    names = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    wfdb.wrsamp("ecg", fs=500, units=["mV"] * 12, sig_name=names, p_signal=signal, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    got = read_format16(tmp_path / "ecg")
    assert got is not None
    assert np.isnan(got.p_signal[100:110, 3]).all() and not np.isnan(got.p_signal[:, 2]).any()
    _assert_same(got, tmp_path / "ecg")
    assert read_wfdb(tmp_path / "ecg").p_signal is not None


@pytest.mark.parametrize("gain_field, extra", [
    ("1000(-50)/uV", "16 0 0 0 0"),  # a baseline and units given
    ("2000/mV", "16 12 0 0 0"),  # no baseline: wfdb takes the ADC zero (12)
    ("2000(7)", "16 0 0 0 0"),  # no units: mV
    ("0(0)/mV", "16 0 0 0 0"),  # gain 0 means 200
    ("2.5e3(3)/mV", "16 0 0 0 0"),  # an exponent
])
def test_header_fields_are_read_with_wfdbs_defaults(tmp_path, gain_field, extra):
    digital = np.array([[0, 1], [-5, 100], [-32768, 2], [32767, -32767]])
    lines = ["rec 2 257.5 4", f"rec.dat 16 {gain_field} {extra} chest lead V1", f"rec.dat 16 {gain_field} {extra} II"]
    path = _record(tmp_path, lines, digital, comments=["# a comment first"])
    got = read_format16(path)
    assert got is not None and got.sig_name == ["chest lead V1", "II"] and got.fs == 257.5
    assert np.isnan(got.p_signal[2, 0]) and not np.isnan(got.p_signal[2, 1])
    _assert_same(got, path)


@pytest.mark.parametrize("lines", [
    ["rec 2 500 4", "rec.dat 212 200(0)/mV 12 0 0 0 0 I", "rec.dat 212 200(0)/mV 12 0 0 0 0 II"],  # format 212
    ["rec 2 500 4", "rec.dat 16x2 200(0)/mV 16 0 0 0 0 I", "rec.dat 16x2 200(0)/mV 16 0 0 0 0 II"],  # frames
    ["rec 2 500 4", "rec.dat 16+4 200(0)/mV 16 0 0 0 0 I", "rec.dat 16+4 200(0)/mV 16 0 0 0 0 II"],  # byte offset
    ["rec 2 500 4", "rec.dat 16:1 200(0)/mV 16 0 0 0 0 I", "rec.dat 16:1 200(0)/mV 16 0 0 0 0 II"],  # skew
    ["rec 2 500", "rec.dat 16 200(0)/mV 16 0 0 0 0 I", "rec.dat 16 200(0)/mV 16 0 0 0 0 II"],  # no length
    ["rec 2 500 3", "rec.dat 16 200(0)/mV 16 0 0 0 0 I", "rec.dat 16 200(0)/mV 16 0 0 0 0 II"],  # file longer
    ["rec 2 500 4", "rec.dat 16 200(0)/mV", "rec.dat 16 200(0)/mV"],  # no channel names
    ["rec/2 2 500 4", "a 2", "b 2"],  # several segments
])
def test_other_layouts_are_left_to_wfdb(tmp_path, lines):
    path = _record(tmp_path, lines, np.zeros((4, 2)))
    assert read_format16(path) is None


@pytest.mark.parametrize("name", ["100", "a103l", "s0010_re"])  # format 212; .mat 16+24; two signal files
def test_real_physionet_records_go_through_wfdb_unchanged(name):
    path = SHARED / name
    assert read_format16(path) is None
    _assert_same(read_wfdb(path), path)


def test_a_missing_signal_file_raises_wfdbs_error(tmp_path):
    path = _record(tmp_path, ["rec 1 500 4", "rec.dat 16 200(0)/mV 16 0 0 0 0 I"], np.zeros((4, 1)))
    (tmp_path / "rec.dat").unlink()
    assert read_format16(path) is None
    with pytest.raises(FileNotFoundError):
        read_wfdb(path)
