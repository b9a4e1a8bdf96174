"""A simple ECG encoder: a small strided 1-D CNN over the leads, pooled to patch tokens."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens


def _conv_block(c_in: int, c_out: int, kernel_size: int, groups: int) -> nn.Sequential:
    """Conv (stride 2) -> GroupNorm -> GELU; GroupNorm, not BatchNorm, so samples never mix."""
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size, stride=2, padding=kernel_size // 2),
        nn.GroupNorm(groups, c_out),
        nn.GELU(),
    )


class ECGConvEncoder(ModalityEncoder):
    """Encode a multi-lead ECG into ``n_tokens`` temporal patch tokens.

    The input has ``2L`` channels: each lead's signal times its ``lead_mask`` and a per-lead
    "missing" indicator, so a missing lead is marked, not silently a flat line. Stride-2 conv blocks
    shrink the signal until it is about ``2 * n_tokens`` samples long (for the spec's
    ``n_samples``); adaptive average pooling then gives exactly ``n_tokens`` tokens. A patient with no
    recorded lead is absent.

    Args:
        d_model: width ``D`` of each token.
        spec: ``{"leads": [...], "fs": float, "n_samples": int}`` (``docs/formats.md`` section 3).
        channels: conv channels.
        n_tokens: number of patch tokens per ECG.
        kernel_size: conv kernel size (odd).
        max_blocks: upper bound on the number of stride-2 conv blocks.
        groups: GroupNorm groups (must divide ``channels``).
        dropout: dropout before the output projection.
    """

    modality = "ecg"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        channels: int = 32,
        n_tokens: int = 16,
        kernel_size: int = 7,
        max_blocks: int = 6,
        groups: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "leads", "fs", "n_samples")
        self.n_leads = len(spec["leads"])
        if self.n_leads == 0:
            raise ValueError("ECGConvEncoder: the spec lists no leads")
        if n_tokens < 1 or channels % groups != 0:
            raise ValueError(
                f"ECGConvEncoder: need n_tokens >= 1 and groups dividing channels, got "
                f"n_tokens={n_tokens}, channels={channels}, groups={groups}"
            )
        self.n_tokens = n_tokens
        blocks = [_conv_block(2 * self.n_leads, channels, kernel_size, groups)]
        length = (int(spec["n_samples"]) + 1) // 2
        while len(blocks) < max_blocks and (length + 1) // 2 >= 2 * n_tokens:
            blocks.append(_conv_block(channels, channels, kernel_size, groups))
            length = (length + 1) // 2
        self.cnn = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(n_tokens)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, d_model), nn.LayerNorm(d_model))

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode each ECG into patch tokens.

        Args:
            inputs: ``signal``, ``lead_mask`` and ``present``.

        Returns:
            ``n_tokens`` tokens per patient, all real when the patient has at least one lead;
            ``times`` is None.

        Shapes:
            - signal: ``(B, L, S)`` float; lead_mask: ``(B, L)`` bool
            - output tokens: ``(B, N, D)`` with ``N = n_tokens``, mask: ``(B, N)``
        """
        b = self.require(inputs, "signal", "lead_mask")
        present = inputs["present"]
        self.check_shape("signal", inputs["signal"], (b, self.n_leads, None))
        self.check_shape("lead_mask", inputs["lead_mask"], (b, self.n_leads))
        lead_mask = inputs["lead_mask"].bool() & present[:, None]  # (B, L)
        has_ecg = lead_mask.any(1)  # (B,)
        if self.training:
            signal = inputs["signal"]
            signal = torch.where(lead_mask[..., None], signal, torch.zeros_like(signal))  # (B, L, S)
            missing = (~lead_mask).to(signal.dtype)[..., None].expand_as(signal)  # (B, L, S)
            h = self.pool(self.cnn(torch.cat([signal, missing], dim=1)))  # (B, C, N) from (B, 2L, S)
        else:
            h = self._encode_eval(inputs["signal"], lead_mask, has_ecg)  # (B, C, N)
        tokens = self.proj(h.transpose(1, 2))  # (B, N, D)
        mask = has_ecg[:, None].expand(b, self.n_tokens)  # (B, N)
        return ModalityTokens.from_tokens(tokens, mask, has_ecg)

    def _encode_eval(self, signal: torch.Tensor, lead_mask: torch.Tensor, has_ecg: torch.Tensor) -> torch.Tensor:
        """The CNN + pooling of the training path, computed with less data movement (inference):
        absent patients are skipped (GroupNorm is per sample, so rows never mix), and the first
        convolution is split by linearity into its signal half and its missing-indicator half,
        which is run only for the patients with a missing lead. No ``(B, 2L, S)`` input is built:
        on CPU building it (mask, concatenate, gather) cost about as much as the convolutions.
        Equal to the training path's maths up to float summation order.

        Shapes:
            signal: ``(B, L, S)``, lead_mask and has_ecg ``(B, L)``/``(B,)`` -> ``(B, C, N)``
        """
        b, n_leads = lead_mask.shape
        rows = has_ecg.nonzero()[:, 0]  # (P,) patients with an ECG
        full = len(rows) == b
        sig, mask = (signal, lead_mask) if full else (signal[rows], lead_mask[rows])  # (P, L, S), (P, L)
        gaps = (~mask).any(1).nonzero()[:, 0]  # (G,) of them, those missing a lead
        if len(gaps):  # missing leads hold padding (maybe NaN): zero them
            sig = sig.masked_fill(~mask[..., None], 0.0)
        conv = self.cnn[0][0]
        h = F.conv1d(sig, conv.weight[:, :n_leads], conv.bias, conv.stride, conv.padding)  # (P, C, S')
        if len(gaps):  # the missing-indicator channels: all zero for complete ECGs
            missing = (~mask[gaps]).to(sig.dtype)[..., None].expand(-1, -1, sig.shape[-1])  # (G, L, S)
            extra = F.conv1d(missing, conv.weight[:, n_leads:], None, conv.stride, conv.padding)  # (G, C, S')
            h = h.index_add(0, gaps, extra.to(h.dtype))
        h = self.cnn[1:](self.cnn[0][1:](h))  # the first block's norm + activation, then the others
        pooled = self.pool(h)  # (P, C, N)
        if full:
            return pooled
        out = pooled.new_zeros(b, *pooled.shape[1:])  # (B, C, N), in pooled's dtype (bfloat16 under autocast)
        out[rows] = pooled
        return out

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        return {"leads": leads, "fs": 100.0, "n_samples": 200}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Two seconds of 12-lead ECG at 100 Hz; patient 0 lacks V6; the last patient is absent.

        Example:
            >>> x = ECGConvEncoder.example_inputs()
            >>> x["signal"].shape
            torch.Size([3, 12, 200])
        """
        g = torch.Generator().manual_seed(seed)
        b, n_leads, n_samples = batch_size, 12, 200
        t = torch.arange(n_samples) / 100.0
        phase = torch.rand(b, n_leads, 1, generator=g) * 6.28
        signal = torch.sin(2 * 3.1416 * 1.2 * t + phase) + 0.1 * torch.randn(b, n_leads, n_samples, generator=g)
        lead_mask = torch.rand(b, n_leads, generator=g) < 0.9
        lead_mask[:, 0] = True
        lead_mask[0, -1] = False
        signal = signal * lead_mask[..., None]  # 0 where a lead is missing
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        signal[-1] = torch.randn(n_leads, n_samples, generator=g) * 100
        lead_mask[-1] = torch.rand(n_leads, generator=g) < 0.5
        return {"signal": signal, "lead_mask": lead_mask, "present": present}
