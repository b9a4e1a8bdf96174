"""The synthetic cohort's ``ecg_signal``: the heart rate, or how irregular the rhythm is."""

import numpy as np
import wfdb
from scipy.signal import find_peaks

from clinfuse.datasets.synthetic.ecg import write_ecg

FS, N = 250, 40


def _rr(tmp_path, signal):
    u = np.random.default_rng(4).standard_normal((N, 4))
    ids = [f"P{i:05d}" for i in range(N)]
    write_ecg(tmp_path / signal, u, ids, np.ones(N, bool), np.random.SeedSequence(0), FS, 10.0, False, signal)
    rate, irregularity = [], []
    for pid in ids:
        lead_ii = wfdb.rdrecord(str(tmp_path / signal / f"{pid}_ecg0"), channel_names=["II"]).p_signal[:, 0]
        peaks, _ = find_peaks(lead_ii, height=0.6, distance=int(0.2 * FS))
        rr = np.diff(peaks) / FS
        rate.append(60.0 / rr.mean())
        irregularity.append(np.abs(np.diff(rr)).mean() / rr.mean())  # successive RR differences
    return u, np.array(rate), np.array(irregularity)


def test_rhythm_signal_moves_the_view_from_the_rate_to_the_irregularity(tmp_path):
    u, rate, irregular = _rr(tmp_path, "rhythm")
    low, high = u[:, 0] < np.quantile(u[:, 0], 1 / 3), u[:, 0] > np.quantile(u[:, 0], 2 / 3)
    assert irregular[high].mean() > 2.5 * irregular[low].mean()  # RR variability about 4% vs 20% by design
    assert np.corrcoef(irregular, u[:, 0])[0, 1] > 0.4
    assert abs(np.corrcoef(rate, u[:, 0])[0, 1]) < 0.35
    u, rate, irregular = _rr(tmp_path, "rate")
    assert np.corrcoef(rate, u[:, 0])[0, 1] > 0.7 and abs(np.corrcoef(irregular, u[:, 0])[0, 1]) < 0.35
