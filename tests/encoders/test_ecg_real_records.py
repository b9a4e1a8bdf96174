"""Real PhysioNet WFDB records (``shared/data/ecg``) through both CNN ECG encoders.

The records are read with ``wfdb`` directly: the reader's ``ECGReader._read_record`` is a method of
a reader built on a cohort folder (``ecg/records.csv``), not a free helper. Leads are selected by
name, case-insensitively, exactly as ``ECGReader`` does, so MIT-BIH's ``MLII`` (modified lead II)
and the Challenge's unspecified precordial ``V`` are NOT taken for standard leads, and non-ECG
channels (``PLETH``) and the Frank leads (``vx vy vz``) are excluded.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from scipy.signal import resample_poly

from clinfuse.encoders.ecg_patches import STANDARD_LEADS, resample_linear
from clinfuse.encoders.inception1d import Inception1dEncoder
from clinfuse.encoders.xresnet1d import XResNet1dEncoder

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecg"
pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"real ECG records not found at {DATA} (shared/data beside the checkout)"
)

SECONDS = 10.0
# record -> (sampling rate in Hz, every channel name, the standard leads it has), from the headers
RECORDS = {
    "s0010_re": (1000, [*(n.lower() for n in STANDARD_LEADS), "vx", "vy", "vz"], list(STANDARD_LEADS)),
    "100": (360, ["MLII", "V5"], ["V5"]),
    "a103l": (250, ["II", "V", "PLETH"], ["II"]),
}
CLASSES = [XResNet1dEncoder, Inception1dEncoder]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread avoids OpenMP start-up and oversubscription costs on shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read_record(name: str, fs: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first ``SECONDS`` of a record as ``(12, S)`` at ``fs``, its ``(12,)`` lead mask and its channels."""
    header = wfdb.rdheader(str(DATA / name))
    record = wfdb.rdrecord(str(DATA / name), sampto=int(round(SECONDS * header.fs)))
    names = {str(n).lower(): j for j, n in enumerate(record.sig_name)}
    n_out = int(round(SECONDS * fs))
    signal = np.zeros((len(STANDARD_LEADS), n_out), dtype=np.float32)
    mask = np.zeros(len(STANDARD_LEADS), dtype=bool)
    ratio = Fraction(fs / float(record.fs)).limit_denominator(1000)
    for k, lead in enumerate(STANDARD_LEADS):
        j = names.get(lead.lower())
        if j is None:
            continue
        x = resample_poly(record.p_signal[:, j], ratio.numerator, ratio.denominator)
        assert np.isfinite(x).all(), f"{name}: lead {lead} has non-finite samples"
        signal[k], mask[k] = x[:n_out], True
    return signal, mask, list(record.sig_name)


def real_batch(fs: float) -> dict[str, torch.Tensor]:
    signals, masks = zip(*(read_record(name, fs)[:2] for name in RECORDS))
    return {
        "signal": torch.from_numpy(np.stack(signals)),  # (3, 12, S)
        "lead_mask": torch.from_numpy(np.stack(masks)),  # (3, 12)
        "present": torch.ones(len(RECORDS), dtype=torch.bool),
    }


def spec(fs: float) -> dict:
    return {"leads": list(STANDARD_LEADS), "fs": fs, "n_samples": int(round(SECONDS * fs))}


def build(cls, fs: float, **kwargs):
    torch.manual_seed(0)
    return cls(32, spec(fs), **kwargs).eval()


def test_records_are_read_with_their_real_leads_and_rates():
    for name, (fs, channels, leads) in RECORDS.items():
        assert wfdb.rdheader(str(DATA / name)).fs == fs
        signal, mask, sig_name = read_record(name, 100.0)
        assert sig_name == channels
        assert [lead for lead, keep in zip(STANDARD_LEADS, mask) if keep] == leads
        assert signal.shape == (12, 1000) and (signal[~mask] == 0).all()
        assert (np.abs(signal[mask]).max(1) > 0.1).all()  # real millivolt-scale waveforms, not flat
        assert np.abs(signal[mask]).max() < 10.0


def test_in_module_resampling_matches_scipy_on_real_ecg():
    """500 -> 100 Hz in torch vs resample_poly on the records' real QRS complexes (documented: ~2 %)."""
    a, b = real_batch(100.0), real_batch(500.0)
    got = resample_linear(b["signal"], 500.0, 100.0)
    keep = a["lead_mask"][..., None].expand_as(got)[..., 50:-50]  # away from the record edges
    ref, got = a["signal"][..., 50:-50][keep], got[..., 50:-50][keep]
    assert (got - ref).norm() / ref.norm() < 0.05


@pytest.mark.parametrize("cls", CLASSES)
def test_real_records_give_finite_tokens_and_ignore_missing_leads(cls):
    x = real_batch(100.0)
    enc = build(cls, 100.0)
    with torch.no_grad():
        out = enc(x)
        assert out.tokens.shape == (3, 10, 32) and torch.isfinite(out.tokens).all()
        assert out.mask.all() and out.present.all()
        torch.testing.assert_close(out.times[0], (torch.arange(10) + 0.5) / 3600.0)  # 1 s patches
        # the lead mask matches the records: 12, 1 (V5) and 1 (II) real leads
        assert x["lead_mask"].sum(1).tolist() == [12, 1, 1]
        # garbage in the leads a record lacks changes nothing
        for fill in (float("nan"), 1e6):
            noisy = dict(x, signal=torch.where(x["lead_mask"][..., None], x["signal"], fill))
            torch.testing.assert_close(enc(noisy).tokens, out.tokens, rtol=0, atol=0)
        # an absent patient: zero, masked, and the others unchanged
        gone = enc(dict(x, present=torch.tensor([True, False, True])))
        assert not gone.mask[1].any() and (gone.tokens[1] == 0).all()
        torch.testing.assert_close(gone.tokens[[0, 2]], out.tokens[[0, 2]], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", CLASSES)
def test_500hz_records_through_a_100hz_model_with_a_window(cls):
    """The same weights read 500 Hz input (``target_fs=100``) close to the 100 Hz input, centre crop."""
    enc100 = build(cls, 100.0, window_seconds=5.0)
    enc500 = build(cls, 500.0, window_seconds=5.0, target_fs=100.0)
    enc500.load_state_dict(enc100.state_dict())
    with torch.no_grad():
        a, b = enc100(real_batch(100.0)), enc500(real_batch(500.0))
    assert torch.isfinite(b.tokens).all() and b.mask.all()
    torch.testing.assert_close(b.times, a.times)
    torch.testing.assert_close(a.times[:, 0], torch.full((3,), 2.75 / 3600.0))  # crop 2.5-7.5 s
    err = (a.tokens - b.tokens).flatten(1).norm(dim=1)  # (B,)
    spread = torch.cdist(a.tokens.flatten(1), a.tokens.flatten(1))  # (B, B) between records
    assert (err < 0.25 * spread[spread > 0].min()).all(), (err, spread)
