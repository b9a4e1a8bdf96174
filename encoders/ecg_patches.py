"""Shared plumbing of the CNN ECG encoders: lead-mask channels, in-module resampling, cropping and
patch tokens. A subclass only builds ``self.backbone`` (a 1-D CNN ``(B, 2L, S) -> (B, C, S')``)."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from scipy.signal import firwin
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens

STANDARD_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@functools.lru_cache(maxsize=16)
def _lowpass_taps(factor: float) -> tuple[float, ...]:
    """FIR low-pass for down-sampling by ``factor``: cut-off at 0.9 x the new Nyquist rate,
    ``2 * ceil(4 * factor) + 1`` Hamming-windowed taps (designed by scipy, applied by torch)."""
    return tuple(firwin(2 * math.ceil(4 * factor) + 1, 0.9 / factor).tolist())


def resample_linear(signal: torch.Tensor, fs_in: float, fs_out: float) -> torch.Tensor:
    """Resample ``(B, C, T)`` from ``fs_in`` to ``fs_out`` Hz in torch: low-pass, then linear interpolation.

    Output length ``round(T * fs_out / fs_in)``; output sample ``i`` is the signal at time
    ``i / fs_out`` (input sample ``i * fs_in / fs_out``), the convention of
    ``scipy.signal.resample_poly`` used by the reader. The two neighbours are gathered by hand
    because ``F.interpolate`` puts output samples half a sample off (``align_corners=False``):
    4 ms at 500 -> 100 Hz, which on real ECG (sharp QRS) is a 24 % relative error against
    resample_poly. Up-sampling needs no anti-aliasing. Down-sampling first applies an FIR low-pass
    (:func:`_lowpass_taps`, replicate-padded depthwise ``conv1d``). Limitation: it is shorter and
    softer than resample_poly's Kaiser filter: measured on the real 500 Hz records, 2.3 % relative
    error against resample_poly, and the band just below the new Nyquist rate is attenuated
    (about -6 dB at 0.9 x Nyquist). For exact preprocessing resample in the reader (``spec["fs"]``).

    Shapes:
        - signal: ``(B, C, T)`` -> ``(B, C, round(T * fs_out / fs_in))``
    """
    if fs_out == fs_in:
        return signal
    b, n_ch, length = signal.shape
    ratio = fs_in / fs_out
    if ratio > 1:
        taps = torch.tensor(_lowpass_taps(ratio), dtype=signal.dtype, device=signal.device)
        half = taps.numel() // 2
        flat = F.pad(signal.reshape(b * n_ch, 1, length), (half, half), mode="replicate")  # (B*C, 1, T + 2h)
        signal = F.conv1d(flat, taps.flip(0)[None, None]).reshape(b, n_ch, length)  # (B, C, T)
    size = max(1, int(round(length * fs_out / fs_in)))
    pos = torch.arange(size, device=signal.device, dtype=torch.float64) * ratio  # exact positions
    left = pos.floor().long().clamp(max=length - 1)
    right = (left + 1).clamp(max=length - 1)
    weight = (pos - left).clamp(max=1.0).to(signal.dtype)  # (T_out,)
    return signal[..., left] * (1 - weight) + signal[..., right] * weight  # (B, C, T_out)


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm, not BatchNorm: statistics per sample, so no patient's output depends on another's
    (the conformance suite checks this) and train/eval behave the same at any batch size."""
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ECGPatchEncoder(ModalityEncoder):
    """Base of the CNN ECG encoders: masked leads in, ``n_patches`` temporal patch tokens out.

    Steps of :meth:`forward`:

    1. **Missing leads.** A lead with ``lead_mask`` False (and every lead of an absent patient) is
       replaced by zeros with ``torch.where`` (so NaN/garbage padding never enters arithmetic), and
       the lead mask is fed as ``L`` extra constant input channels (1 = recorded): a missing lead is
       thereby distinguishable from a flat recorded one. Input channels: ``2L``.
    2. **Sampling rate.** The reader delivers ``spec["fs"]``; when ``target_fs`` differs, the
       signal is resampled in-module with :func:`resample_linear` (so a model trained at 100 Hz can
       read a 500 Hz cohort; see there for the down-sampling limitation).
    3. **Duration.** ``window_seconds=None`` uses the whole signal. Otherwise a window of
       ``round(window_seconds * fs)`` samples is cut: in training a random crop per patient (start
       drawn with ``torch.randint``, so ``torch.manual_seed`` reproduces it), in eval the centre
       crop (deterministic, one pass; no sliding-window averaging). Any length ``S >=`` the window
       works.
    4. **Tokens.** The backbone's final map ``(B, C, S')`` is adaptive-average-pooled into
       ``n_patches`` equal windows, each projected to ``D`` (dropout, linear, a learned per-patch
       position embedding, LayerNorm). ``times`` is each patch's nominal centre in hours from the
       start of the record (crop offset included): ``(start + (j + 0.5) * W / n_patches) / fs /
       3600`` for a window of ``W`` samples at ``fs``. A patient without any recorded lead is absent.

    Args:
        d_model: token width ``D``.
        spec: ``{"leads": [...], "fs": float, "n_samples": int}`` (``docs/formats.md`` section 3).
        n_patches: number of patch tokens ``N``.
        window_seconds: crop length in seconds, or None for the whole signal.
        target_fs: the rate the CNN runs at, or None for ``spec["fs"]``.
        dropout: dropout before the token projection.
    """

    modality = "ecg"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_patches: int = 10,
        window_seconds: float | None = None,
        target_fs: float | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model)
        name = type(self).__name__
        self.require_spec(spec, "leads", "fs", "n_samples")
        self.n_leads = len(spec["leads"])
        self.fs_in = float(spec["fs"])
        self.fs = float(target_fs) if target_fs is not None else self.fs_in
        if self.n_leads == 0 or self.fs_in <= 0 or self.fs <= 0:
            raise ValueError(f"{name}: need leads and fs > 0; spec={spec}, target_fs={target_fs}")
        if n_patches < 1:
            raise ValueError(f"{name}: n_patches must be >= 1, got {n_patches}")
        record_seconds = int(spec["n_samples"]) / self.fs_in
        if window_seconds is not None and not 0 < window_seconds <= record_seconds:
            raise ValueError(
                f"{name}: window_seconds={window_seconds} must be in (0, {record_seconds:g}] "
                f"(the spec's records last n_samples / fs = {record_seconds:g} s)"
            )
        self.n_patches = n_patches
        self.window = None if window_seconds is None else max(1, int(round(window_seconds * self.fs)))
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.AdaptiveAvgPool1d(n_patches)
        self.position = nn.Parameter(torch.randn(n_patches, d_model) * 0.02)
        self.out_norm = nn.LayerNorm(d_model)

    def build_projection(self, channels: int) -> None:
        """Create the ``C -> D`` token projection once the subclass knows its final width ``C``."""
        self.proj = nn.Linear(channels, self.d_model)

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode each ECG into ``n_patches`` temporal patch tokens.

        Args:
            inputs: ``signal``, ``lead_mask`` and ``present`` (``docs/formats.md`` section 2).

        Returns:
            ``N = n_patches`` tokens per patient with at least one recorded lead (else absent);
            ``times`` in hours from the record start.

        Shapes:
            - signal: ``(B, L, T)`` float at ``spec["fs"]`` (T = samples, any length >= the
              window); lead_mask: ``(B, L)`` bool; present: ``(B,)`` bool
            - output tokens: ``(B, N, D)``; mask, times: ``(B, N)``
        """
        b = self.require(inputs, "signal", "lead_mask")
        present = inputs["present"]
        self.check_shape("signal", inputs["signal"], (b, self.n_leads, None))
        self.check_shape("lead_mask", inputs["lead_mask"], (b, self.n_leads))
        lead_mask = inputs["lead_mask"].bool() & present[:, None]  # (B, L)
        signal = inputs["signal"]
        signal = torch.where(lead_mask[..., None], signal, torch.zeros_like(signal))  # (B, L, T)
        signal = resample_linear(signal, self.fs_in, self.fs)  # (B, L, T') at self.fs
        signal, start, width = self._crop(signal)  # (B, L, W)
        observed = lead_mask.to(signal.dtype)[..., None].expand_as(signal)  # (B, L, W)
        h = self.backbone(torch.cat([signal, observed], dim=1))  # (B, C, W')
        h = self.pool(h).transpose(1, 2)  # (B, N, C)
        tokens = self.out_norm(self.proj(self.dropout(h)) + self.position)  # (B, N, D)
        offsets = (torch.arange(self.n_patches, device=signal.device, dtype=signal.dtype) + 0.5) * (
            width / self.n_patches
        )
        times = (start.to(signal.dtype)[:, None] + offsets) / (self.fs * 3600.0)  # (B, N) hours
        has_ecg = lead_mask.any(1)  # (B,)
        mask = has_ecg[:, None].expand(b, self.n_patches)  # (B, N)
        return ModalityTokens.from_tokens(tokens, mask, has_ecg, times)

    def _crop(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The window of every patient, its start sample and its width (see the class docstring).

        Shapes:
            - signal: ``(B, L, T)`` -> ``(B, L, W)``; start: ``(B,)`` long
        """
        b, n_ch, length = signal.shape
        start = torch.zeros(b, dtype=torch.long, device=signal.device)
        if self.window is None:
            return signal, start, length
        if length < self.window:
            raise ValueError(
                f"{type(self).__name__}: ecg input 'signal' has {length} samples at {self.fs:g} Hz, "
                f"fewer than the {self.window}-sample window (window_seconds); got shape {tuple(signal.shape)}"
            )
        if self.training:
            start = torch.randint(0, length - self.window + 1, (b,), device=signal.device)
        else:
            start = start + (length - self.window) // 2
        idx = start[:, None] + torch.arange(self.window, device=signal.device)  # (B, W)
        window = signal.gather(2, idx[:, None, :].expand(b, n_ch, self.window))  # (B, L, W)
        return window, start, self.window

    # ------------------------------------------------------------------ examples
    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"leads": list(STANDARD_LEADS), "fs": 100.0, "n_samples": 200}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Two seconds of 12-lead ECG at 100 Hz; patient 0 lacks V6; the last patient is absent.

        Example:
            >>> x = ECGPatchEncoder.example_inputs()
            >>> x["signal"].shape, x["lead_mask"].shape
            (torch.Size([3, 12, 200]), torch.Size([3, 12]))
        """
        g = torch.Generator().manual_seed(seed)
        b, n_leads, n_samples = batch_size, len(STANDARD_LEADS), 200
        t = torch.arange(n_samples) / 100.0
        phase = torch.rand(b, n_leads, 1, generator=g) * 2 * math.pi
        rate = 0.8 + torch.rand(b, 1, 1, generator=g)  # heart rate 48-108 bpm
        signal = torch.sin(2 * math.pi * rate * t + phase) + 0.1 * torch.randn(b, n_leads, n_samples, generator=g)
        lead_mask = torch.rand(b, n_leads, generator=g) < 0.9
        lead_mask[:, 0] = True
        lead_mask[0, -1] = False
        signal = torch.where(lead_mask[..., None], signal, torch.zeros_like(signal))  # padding = 0
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: garbage an encoder must ignore
        signal[-1] = torch.randn(n_leads, n_samples, generator=g) * 100
        lead_mask[-1] = torch.rand(n_leads, generator=g) < 0.5
        return {"signal": signal, "lead_mask": lead_mask, "present": present}
