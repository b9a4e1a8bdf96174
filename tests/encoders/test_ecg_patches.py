"""Shared behaviour of the CNN ECG encoders (XResNet1d, Inception1d): resampling, cropping, patch
times and the lead-mask channels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from clinfuse.encoders.ecg_patches import resample_linear
from clinfuse.encoders.inception1d import Inception1dEncoder
from clinfuse.encoders.xresnet1d import XResNet1dEncoder

CLASSES = [XResNet1dEncoder, Inception1dEncoder]
D = 16


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread avoids OpenMP start-up and oversubscription costs on shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(cls, spec: dict, **kwargs):
    torch.manual_seed(0)
    return cls(D, spec, **{**cls.example_kwargs(), "dropout": 0.0, **kwargs}).eval()


def sines(b: int, n_leads: int, t: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``(b, n_leads, len(t))`` sines of 1-3 Hz with random phases, evaluated at times ``t`` (s)."""
    g = torch.Generator().manual_seed(seed)
    freq = 1.0 + 2.0 * torch.rand(b, n_leads, 1, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(b, n_leads, 1, generator=g, dtype=torch.float64)
    return torch.sin(2 * math.pi * freq * t.double() + phase).float()


def sine_batch(b: int, n_leads: int, n_samples: int, fs: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Smooth multi-lead signals with every lead recorded."""
    return {
        "signal": sines(b, n_leads, torch.arange(n_samples) / fs, seed),
        "lead_mask": torch.ones(b, n_leads, dtype=torch.bool),
        "present": torch.ones(b, dtype=torch.bool),
    }


# --------------------------------------------------------------------------- resampling


def test_upsampling_is_linear_interpolation_at_exact_sample_times():
    x = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = resample_linear(x, 100.0, 500.0)
    assert y.shape == (2, 3, 200)
    # independent reference: numpy interpolation at input index i * 100 / 500 (time i / 500 s)
    pos = np.arange(200) * 100.0 / 500.0
    ref = np.stack([[np.interp(pos, np.arange(40), row) for row in xb] for xb in x.numpy()])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12)
    assert resample_linear(torch.ones(1, 1, 7), 100.0, 100.0).shape == (1, 1, 7)


def test_downsampling_keeps_slow_waves_and_suppresses_aliasing():
    fs_in, fs_out, n = 500.0, 100.0, 5000
    t = np.arange(n) / fs_in
    slow = np.sin(2 * np.pi * 1.0 * t)
    fast = np.sin(2 * np.pi * 230.0 * t)  # above the new Nyquist (50 Hz): would alias to 30 Hz
    y = resample_linear(torch.tensor(np.stack([slow, fast]))[None], fs_in, fs_out)[0].numpy()
    assert y.shape == (2, 1000)
    t_out = np.arange(1000) / fs_out
    np.testing.assert_allclose(y[0, 10:-10], np.sin(2 * np.pi * 1.0 * t_out[10:-10]), atol=1e-3)
    assert np.abs(y[1, 10:-10]).max() < 0.01  # plain decimation/linear interpolation keeps ~0.98
    # a non-integer factor (360 -> 100 Hz, MIT-BIH) agrees with scipy's polyphase resampler
    t360 = np.arange(3600) / 360.0
    wave = np.sin(2 * np.pi * 1.3 * t360) + 0.3 * np.sin(2 * np.pi * 7.0 * t360)
    ref = resample_poly(wave, 5, 18)
    got = resample_linear(torch.tensor(wave)[None, None], 360.0, 100.0)[0, 0].numpy()
    np.testing.assert_allclose(got[20:-20], ref[20:-20], atol=5e-3)


@pytest.mark.parametrize("cls", CLASSES)
def test_target_fs_reads_a_500hz_spec_like_the_100hz_model(cls):
    """Same weights: 500 Hz waves resampled in-module == the same waves sampled at 100 Hz."""
    spec100 = {"leads": [f"l{i}" for i in range(12)], "fs": 100.0, "n_samples": 400}
    ones = {"lead_mask": torch.ones(2, 12, dtype=torch.bool), "present": torch.ones(2, dtype=torch.bool)}
    t100 = torch.arange(400) / 100.0  # the same waves sampled analytically at 100 Hz
    x100 = dict(ones, signal=sines(2, 12, t100))
    x500 = dict(ones, signal=sines(2, 12, torch.arange(2000) / 500.0))
    enc100 = build(cls, spec100)
    enc500 = build(cls, dict(spec100, fs=500.0, n_samples=2000), target_fs=100.0)
    enc500.load_state_dict(enc100.state_dict())
    with torch.no_grad():
        a, b = enc100(x100), enc500(x500)
    torch.testing.assert_close(b.times, a.times)
    err = (a.tokens - b.tokens).abs().max()
    spread = (a.tokens[0] - a.tokens[1]).abs().max()  # how far two different patients are
    assert err < 0.02 * spread, (err, spread)


# --------------------------------------------------------------------------- cropping and times


@pytest.mark.parametrize("cls", CLASSES)
def test_times_are_patch_centres_in_hours(cls):
    spec = {"leads": ["I", "II"], "fs": 100.0, "n_samples": 600}
    x = sine_batch(2, 2, 600, 100.0)
    enc = build(cls, spec, n_patches=4)
    # whole record: centres at (j + 0.5) * 600 / 4 samples = 0.75, 2.25, 3.75, 5.25 s
    expect = torch.tensor([0.75, 2.25, 3.75, 5.25]) / 3600.0
    torch.testing.assert_close(enc(x).times, expect.expand(2, 4))
    # eval crop of 2 s from a 6 s record: centred, start = (600 - 200) // 2 = 200 samples = 2 s
    enc = build(cls, spec, n_patches=4, window_seconds=2.0)
    expect = torch.tensor([2.25, 2.75, 3.25, 3.75]) / 3600.0
    torch.testing.assert_close(enc(x).times, expect.expand(2, 4))


@pytest.mark.parametrize("cls", CLASSES)
def test_training_crop_is_random_per_patient_seeded_and_exact(cls):
    spec = {"leads": ["I", "II", "V1"], "fs": 100.0, "n_samples": 500}
    x = sine_batch(6, 3, 500, 100.0)
    enc = build(cls, spec, n_patches=4, window_seconds=1.5).train()  # dropout=0: only the crop is random
    torch.manual_seed(1)
    out = enc(x)
    torch.manual_seed(1)
    torch.testing.assert_close(enc(x).tokens, out.tokens, rtol=0, atol=0)  # reproducible under the seed
    width = 150
    start = out.times[:, 0] * 100.0 * 3600.0 - 0.5 * width / 4  # recover each patient's crop start
    start = start.round().long()
    assert ((start >= 0) & (start <= 500 - width)).all()
    assert len(set(start.tolist())) > 1, "every patient got the same crop"
    # the tokens are exactly those of an un-cropped encoder (same weights) fed the cut window
    whole = build(cls, dict(spec, n_samples=width))
    whole.load_state_dict(enc.state_dict())
    for i, s in enumerate(start.tolist()):
        cut = {"signal": x["signal"][i : i + 1, :, s : s + width], "lead_mask": x["lead_mask"][i : i + 1],
               "present": x["present"][i : i + 1]}  # fmt: skip
        torch.testing.assert_close(whole(cut).tokens[0], out.tokens[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", CLASSES)
def test_any_length_at_least_the_window_works_and_shorter_fails(cls):
    spec = {"leads": ["I", "II"], "fs": 100.0, "n_samples": 300}
    enc = build(cls, spec, window_seconds=2.0)
    for n in (200, 300, 777):
        out = enc(sine_batch(2, 2, n, 100.0))
        assert out.tokens.shape == (2, 4, D) and torch.isfinite(out.tokens).all()
    with pytest.raises(ValueError, match="signal.*199 samples"):
        enc(sine_batch(2, 2, 199, 100.0))
    with pytest.raises(ValueError, match="window_seconds"):
        cls(D, spec, window_seconds=3.5)  # longer than the spec's 3 s records


# --------------------------------------------------------------------------- missing leads


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_lead_differs_from_a_flat_lead_and_ignores_nan(cls):
    spec = {"leads": ["I", "II", "V1"], "fs": 100.0, "n_samples": 200}
    enc = build(cls, spec)
    x = sine_batch(1, 3, 200, 100.0)
    flat = dict(x, signal=x["signal"].clone())
    flat["signal"][:, 2] = 0.0  # V1 recorded but flat
    missing = dict(flat, lead_mask=torch.tensor([[True, True, False]]))
    assert not torch.allclose(enc(flat).tokens, enc(missing).tokens)
    nan = dict(missing, signal=missing["signal"].clone())
    nan["signal"][:, 2] = float("nan")
    torch.testing.assert_close(enc(nan).tokens, enc(missing).tokens, rtol=0, atol=0)
    # a patient with no recorded lead is absent
    none = dict(nan, lead_mask=torch.zeros(1, 3, dtype=torch.bool))
    out = enc(none)
    assert not out.present.any() and (out.tokens == 0).all() and (out.times == 0).all()
