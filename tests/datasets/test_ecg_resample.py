"""Batched polyphase resampling equals scipy.signal.resample_poly; batching changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import firwin, resample_poly

from clinfuse.datasets.ecg_leads import _lowpass, pick_leads, resample_picked, select_leads
from clinfuse.datasets.ecg_resample import resample_poly_rows

RATES = [(1, 5), (5, 18), (1, 10), (2, 5), (100, 257), (2, 1), (3, 2), (7, 7)]


@pytest.mark.parametrize("up, down", RATES)
@pytest.mark.parametrize("n_in", [1, 7, 503, 3600])
def test_equals_scipy_with_its_default_filter_in_float64(up, down, n_in):
    x = np.random.default_rng(n_in).standard_normal((3, n_in))
    ref = resample_poly(x, up, down, axis=-1)  # scipy designs its Kaiser filter itself
    max_rate = max(up, down) // np.gcd(up, down)
    window = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)) if max_rate > 1 else [1.0]
    got = resample_poly_rows(torch.from_numpy(x), up, down, window).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("up, down", [(1, 5), (5, 18)])
def test_float32_filter_and_crop(up, down):
    x = np.random.default_rng(0).standard_normal((12, 5000)).astype(np.float32)
    ref = resample_poly(x, up, down, axis=-1, window=_lowpass(up, down))
    got = resample_poly_rows(torch.from_numpy(x), up, down, _lowpass(up, down), n_keep=700).numpy()
    assert got.dtype == np.float32 and got.shape == (12, 700)
    np.testing.assert_allclose(got, ref[:, :700], rtol=0, atol=1e-5)


def _ecg(rng: np.random.Generator, fs: int, seconds: float, names: list[str]) -> np.ndarray:
    n = int(fs * seconds)
    t = np.arange(n) / fs
    return np.stack([np.sin(2 * np.pi * (1 + k) * t) + 0.1 * rng.standard_normal(n) for k in range(len(names))], 1)


@pytest.mark.parametrize("rows_per_call", [1, 4, 128])
def test_resample_picked_batches_equal_one_by_one_and_scipy(rows_per_call, monkeypatch):
    monkeypatch.setattr("clinfuse.datasets.ecg_leads._RESAMPLE_ROWS", rows_per_call)
    rng = np.random.default_rng(1)
    leads = ["I", "II", "V1"]
    inputs = [  # mixed rates, lengths and lead subsets
        (_ecg(rng, 500, 3, ["I", "II", "V1"]), ["I", "II", "V1"], 500.0),
        (_ecg(rng, 500, 3, ["II"]), ["II"], 500.0),
        (_ecg(rng, 360, 2, ["V1", "I"]), ["V1", "I"], 360.0),
        (_ecg(rng, 500, 1.5, ["I", "II", "V1"]), ["I", "II", "V1"], 500.0),
        (_ecg(rng, 100, 3, ["I"]), ["I"], 100.0),
        (_ecg(rng, 500, 3, ["V1", "I"]), ["V1", "I"], 500.0),
        (_ecg(rng, 360, 2, ["II"]), ["II"], 360.0),
    ]
    picked = [pick_leads(x, names, ["mV"] * len(names), fs, leads) for x, names, fs in inputs]
    batched = resample_picked(picked, 100.0, 250)
    for (x, names, fs), (signal, mask) in zip(inputs, batched):
        alone = select_leads(x, names, ["mV"] * len(names), fs, leads, 100.0, 250)
        np.testing.assert_allclose(signal, alone[0], rtol=0, atol=1e-6)
        assert np.array_equal(mask, alone[1])
        for k, lead in enumerate(leads):
            if lead not in names:
                assert not mask[k] and not signal[k].any()
                continue
            raw = x[:, names.index(lead)]
            want = raw if fs == 100 else resample_poly(raw, *((1, 5) if fs == 500 else (5, 18)))
            n = min(len(want), 250)
            np.testing.assert_allclose(signal[k, :n], want[:n], atol=1e-5)
            assert not signal[k, n:].any()  # zero-padded to n_samples
