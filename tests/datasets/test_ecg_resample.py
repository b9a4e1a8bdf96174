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


def test_blocks_of_rows_in_any_memory_order_equal_one_stacked_array():
    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal((12, 700)).astype(np.float32) for _ in range(3)]
    blocks[1] = np.asfortranarray(blocks[1])  # a transposed (channel-last) signal, as wfdb returns
    blocks[2] = blocks[2][::2]  # a row-strided view
    h = _lowpass(1, 5)
    stacked = resample_poly_rows(torch.from_numpy(np.concatenate(blocks)), 1, 5, h, n_keep=100)
    listed = resample_poly_rows([torch.from_numpy(b) for b in blocks], 1, 5, h, n_keep=100)
    assert listed.shape == (30, 100)
    np.testing.assert_array_equal(listed.numpy(), stacked.numpy())
    want = resample_poly(blocks[1][4].astype(np.float64), 1, 5)[:100]
    np.testing.assert_allclose(listed[12 + 4].numpy(), want, atol=1e-5)
    same_rate = resample_poly_rows([torch.from_numpy(b) for b in blocks], 2, 2, h)  # ratio 1: stacked copy
    np.testing.assert_array_equal(same_rate.numpy(), np.concatenate(blocks))


@pytest.mark.parametrize("order", ["C", "F"])
def test_pick_leads_checks_the_picked_leads_only(order):
    rng = np.random.default_rng(4)
    x = np.asarray(rng.standard_normal((500, 4)), order=order)  # channels I, II, V1, RESP (all mV)
    names, units = ["I", "II", "V1", "RESP"], ["mV", "mV", "mV", "mV"]
    leads = ["I", "II", "V1"]
    got = pick_leads(x, names, units, 500.0, leads)
    np.testing.assert_array_equal(got.signal, x[:, :3].T.astype(np.float32))
    assert got.mask.tolist() == [True, True, True]
    bad = x.copy(order=order)
    bad[7, 3] = np.inf  # in a channel that is not one of the leads: not read, not an error
    np.testing.assert_array_equal(pick_leads(bad, names, units, 500.0, leads).signal, got.signal)
    for value, match in ((np.inf, "lead II has infinite samples"), (1e39, "lead II has infinite samples .*float32's range"),
                         (np.nan, "lead II has NaN samples")):
        bad = x.copy(order=order)
        bad[7, 1] = value
        with pytest.raises(ValueError, match=match):
            pick_leads(bad, names, units, 500.0, leads, where="rec1")
    gap = x.copy(order=order)
    gap[:, 2] = np.nan  # an all-NaN lead is a missing lead: masked and dropped, the others kept
    got = pick_leads(gap, names, units, 500.0, leads)
    assert got.mask.tolist() == [True, True, False]
    np.testing.assert_array_equal(got.signal, x[:, :2].T.astype(np.float32))
    big = np.full((500, 3), 3e38)  # finite in float32, though its float32 sum overflows
    got = pick_leads(big, leads, ["mV"] * 3, 500.0, leads)
    assert got.mask.all() and np.isfinite(got.signal).all()
    microvolts = pick_leads(x[:, :3] * 1000, leads, ["uV"] * 3, 500.0, leads)
    np.testing.assert_allclose(microvolts.signal, x[:, :3].T, rtol=1e-6)
    with pytest.raises(ValueError, match="none of the leads"):
        pick_leads(x[:, 3:], ["RESP"], ["mV"], 500.0, leads)


def test_resample_signal_is_scipys_resample_poly_in_float32_and_the_readers_resampling():
    from scipy.signal import resample_poly

    from clinfuse.datasets.ecg_leads import resample_signal, select_leads

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 2500)).cumsum(axis=1)  # (L, S) at 500 Hz, 5 s
    got = resample_signal(x, 500.0, 100.0)
    assert got.dtype == np.float32 and got.shape == (3, 500)
    want = resample_poly(x.astype(np.float32).astype(np.float64), 1, 5, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # what the reader makes of the full-rate record (resampled there) and of the resampled one (read as is)
    full, _ = select_leads(x.T, ["I", "II", "V1"], ["mV"] * 3, 500.0, ["I", "II", "V1"], 100.0, 500)
    small, _ = select_leads(got.T, ["I", "II", "V1"], ["mV"] * 3, 100.0, ["I", "II", "V1"], 100.0, 500)
    np.testing.assert_allclose(small, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(resample_signal(got, 100.0, 100.0), got)  # same rate: unchanged
    with pytest.raises(ValueError, match=r"must be \(L, S\)"):
        resample_signal(x[0], 500.0, 100.0)
    with pytest.raises(ValueError, match="sampling rates must be within"):
        resample_signal(x, 500.0, 0.5)
