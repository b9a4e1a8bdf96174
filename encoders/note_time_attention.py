"""Attention across a patient's timed notes: a learned continuous time embedding plus a transformer.

Shared by the notes encoders that first turn every note into one vector (a small word-level
transformer, or a frozen pretrained sentence embedding) and then let the notes attend to each other.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Time2Vec(nn.Module):
    """A learned continuous time embedding: one linear and ``F`` periodic features, projected to ``D``.

    Follows Time2Vec (Kazemi et al., 2019, "Time2Vec: Learning a Vector Representation of Time"):
    ``[w0 t + b0, sin(w_i t + b_i)]`` with learned ``w``, ``b``; the frequencies start at periods
    spaced geometrically from 1 h to 1000 h. Times are divided by ``time_scale`` hours first so the
    linear feature stays O(1) over a stay.

    Args:
        d_model: output width ``D``.
        n_frequencies: periodic features ``F``.
        time_scale: hours per unit of the linear feature.
    """

    def __init__(self, d_model: int, n_frequencies: int = 16, time_scale: float = 24.0) -> None:
        super().__init__()
        if n_frequencies < 1 or time_scale <= 0:
            raise ValueError(f"Time2Vec: need n_frequencies >= 1 and time_scale > 0, got {n_frequencies}, {time_scale}")
        self.time_scale = float(time_scale)
        periods = torch.logspace(0.0, 3.0, n_frequencies) / self.time_scale  # in units of time_scale
        self.frequency = nn.Parameter(2 * math.pi / periods)
        self.phase = nn.Parameter(torch.zeros(n_frequencies))
        self.linear = nn.Linear(1, 1)
        self.out = nn.Linear(1 + n_frequencies, d_model)

    def forward(self, times: torch.Tensor) -> torch.Tensor:
        """Embed times given in hours (finite everywhere: callers fill padding first).

        Shapes:
            - times: ``(B, T)`` float hours
            - output: ``(B, T, D)``
        """
        t = (times / self.time_scale)[..., None]  # (B, T, 1)
        features = torch.cat([self.linear(t), torch.sin(t * self.frequency + self.phase)], dim=-1)  # (B, T, 1+F)
        return self.out(features)  # (B, T, D)


class NoteTimeAttention(nn.Module):
    """Contextualise per-note vectors over time: add a Time2Vec embedding, then self-attention.

    A learned always-valid "null" token is prepended to every patient's notes, so a patient with no
    real note still has one key to attend to (no NaN from an all-masked softmax); its output is
    dropped. Padded notes are filled with zeros before any arithmetic and their outputs are zero.

    Args:
        d_model: width ``D`` of the note vectors.
        n_heads: attention heads.
        n_layers: transformer layers across notes.
        dropout: dropout inside the transformer layers.
        n_frequencies: periodic features of the time embedding.
        time_scale: hours per unit of the time embedding's linear feature.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        n_layers: int = 1,
        dropout: float = 0.1,
        n_frequencies: int = 16,
        time_scale: float = 24.0,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"NoteTimeAttention: n_layers must be >= 1, got {n_layers}")
        self.time = Time2Vec(d_model, n_frequencies, time_scale)
        self.null = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, notes: torch.Tensor, times: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attend across each patient's real notes.

        Args:
            notes: one vector per note (padding may hold anything, even NaN).
            times: note times in hours (padding may hold anything).
            mask: True = a real note.

        Shapes:
            - notes: ``(B, K, D)``; times, mask: ``(B, K)``
            - output: ``(B, K, D)``, zero where ``mask`` is False
        """
        b, _, d = notes.shape
        real = mask.bool()[..., None]  # (B, K, 1)
        x = torch.where(real, notes, torch.zeros_like(notes))  # (B, K, D)
        t = torch.where(mask.bool(), times, torch.zeros_like(times))  # (B, K)
        x = x + self.time(t)  # (B, K, D)
        seq = torch.cat([self.null.expand(b, 1, d), x], dim=1)  # (B, 1 + K, D)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask.bool()], dim=1)
        out = self.layers(seq, src_key_padding_mask=~valid)  # torch wants True = ignore: invert here
        out = self.norm(out[:, 1:])  # (B, K, D)
        return torch.where(real, out, torch.zeros_like(out))
