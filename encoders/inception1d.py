"""Inception1d ECG encoder: InceptionTime modules (bottleneck, parallel long convs, max-pool branch)
with a residual connection every three modules, emitting patch tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.ecg_patches import ECGPatchEncoder, norm


class InceptionModule1d(nn.Module):
    """One InceptionTime module: a 1x1 bottleneck feeding parallel convs of several kernel sizes,
    plus a max-pool -> 1x1 conv branch on the raw input; concatenated, GroupNorm, ReLU.

    Args:
        c_in: input channels.
        n_filters: output channels of each branch (output width ``(len(kernel_sizes) + 1) * n_filters``).
        kernel_sizes: kernel sizes of the parallel convs (odd, so "same" padding is symmetric).
        bottleneck: bottleneck width.
        groups: GroupNorm groups.
    """

    def __init__(self, c_in: int, n_filters: int, kernel_sizes: Sequence[int], bottleneck: int, groups: int) -> None:
        super().__init__()
        self.bottleneck = nn.Conv1d(c_in, bottleneck, 1, bias=False)
        self.convs = nn.ModuleList(
            nn.Conv1d(bottleneck, n_filters, k, padding=k // 2, bias=False) for k in kernel_sizes
        )
        self.pool_branch = nn.Sequential(nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(c_in, n_filters, 1, bias=False))
        self.out = nn.Sequential(norm((len(kernel_sizes) + 1) * n_filters, groups), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C_in, T)`` -> ``(B, (K + 1) * n_filters, T)`` for ``K`` kernel sizes."""
        z = self.bottleneck(x)
        branches = [conv(z) for conv in self.convs] + [self.pool_branch(x)]
        return self.out(torch.cat(branches, dim=1))


class Inception1dEncoder(ECGPatchEncoder):
    """InceptionTime over the leads, pooled into temporal patch tokens.

    Follows Ismail Fawaz et al. 2020, "InceptionTime: Finding AlexNet for Time Series
    Classification", as benchmarked on PTB-XL by Strodthoff et al. 2021 (inception1d): ``depth``
    inception modules (bottleneck, parallel convs of several kernel sizes, max-pool
    branch), with a 1x1-conv residual shortcut added every three modules. Deviations for this
    library: GroupNorm instead of BatchNorm (per-sample statistics, so patients stay independent);
    an average-pooling of the input by ``input_stride`` before the first module, for CPU cost (the
    original runs at the input rate: a 39-tap kernel over 64 channels at 100 Hz costs about 4x the
    whole default XResNet1dEncoder on CPU). Kernel sizes count samples at the pooled rate, so the
    defaults (100 Hz / 4 = 25 Hz, kernels 9/5/3) span 0.36/0.2/0.12 s, close to the published
    39/19/9 at 100 Hz (0.39/0.19/0.09 s); with ``input_stride=1, kernel_sizes=(39, 19, 9),
    n_filters=32`` one gets the published configuration. A patch-token head replaces the classifier.
    Missing leads, resampling, cropping and the tokens are described in :class:`ECGPatchEncoder`.

    Args:
        d_model: token width ``D``.
        spec: ``{"leads": [...], "fs": float, "n_samples": int}`` (``docs/formats.md`` section 3).
        n_filters: channels of each branch; a module outputs ``(len(kernel_sizes) + 1) * n_filters``.
        kernel_sizes: kernel sizes of the parallel convs (odd).
        bottleneck: bottleneck width.
        depth: number of inception modules (a residual shortcut closes every third one and the last).
        input_stride: average-pooling factor applied to the input (1 = none).
        groups: GroupNorm groups (reduced to a divisor of each width).
        n_patches: number of patch tokens ``N``.
        window_seconds: crop length in seconds (random in training, centre in eval), None = all.
        target_fs: the rate the CNN runs at (in-module resampling), None = ``spec["fs"]``.
        dropout: dropout before the token projection.
    """

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_filters: int = 16,
        kernel_sizes: Sequence[int] = (9, 5, 3),
        bottleneck: int = 16,
        depth: int = 6,
        input_stride: int = 4,
        groups: int = 8,
        n_patches: int = 10,
        window_seconds: float | None = None,
        target_fs: float | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model, spec, n_patches, window_seconds, target_fs, dropout)
        if depth < 1 or input_stride < 1 or not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(
                f"Inception1dEncoder: need depth >= 1, input_stride >= 1 and odd kernel_sizes; got "
                f"depth={depth}, input_stride={input_stride}, kernel_sizes={kernel_sizes}"
            )
        self.input_pool = nn.AvgPool1d(input_stride, ceil_mode=True) if input_stride > 1 else nn.Identity()
        width = (len(kernel_sizes) + 1) * n_filters
        c_in = 2 * self.n_leads  # signals + lead mask
        self.blocks = nn.ModuleList()
        self.shortcuts = nn.ModuleDict()
        res_in = c_in
        for d in range(depth):
            self.blocks.append(InceptionModule1d(c_in, n_filters, kernel_sizes, bottleneck, groups))
            c_in = width
            if d % 3 == 2 or d == depth - 1:  # close a residual group
                self.shortcuts[str(d)] = nn.Sequential(nn.Conv1d(res_in, width, 1, bias=False), norm(width, groups))
                res_in = width
        self.act = nn.ReLU()
        self.build_projection(width)

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The CNN: ``(B, 2L, T)`` -> ``(B, C, ceil(T / input_stride))``."""
        x = self.input_pool(x)
        residual = x
        for d, module in enumerate(self.blocks):
            x = module(x)
            if str(d) in self.shortcuts:
                x = self.act(x + self.shortcuts[str(d)](residual))
                residual = x
        return x

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"n_filters": 4, "kernel_sizes": (9, 5, 3), "bottleneck": 4, "depth": 4, "groups": 4, "n_patches": 4}
