"""XResNet1d ECG encoder: a 1-D ResNet-D (three-conv stem, avg-pool shortcuts) emitting patch tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.ecg_patches import ECGPatchEncoder, norm


def conv_norm(c_in: int, c_out: int, kernel_size: int, stride: int, groups: int, act: bool = True) -> nn.Sequential:
    """Conv (no bias: the norm has one) -> GroupNorm (per sample, see :func:`norm`) -> ReLU."""
    layers: list[nn.Module] = [
        nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        norm(c_out, groups),
    ]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResBlock1d(nn.Module):
    """Basic residual block of ResNet-D: two convs; the shortcut down-samples by average pooling
    (not a strided 1x1 conv, which would drop 3 of every 4 inputs) then matches width by a 1x1 conv.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: 1 or 2 (down-sampling in the first conv and in the shortcut).
        kernel_size: conv kernel size (odd).
        groups: GroupNorm groups.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_norm(c_in, c_out, kernel_size, stride, groups),
            conv_norm(c_out, c_out, kernel_size, 1, groups, act=False),
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            # ceil_mode: same length as the strided conv's ceil(T / 2)
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            shortcut.append(conv_norm(c_in, c_out, 1, 1, groups, act=False))
        self.shortcut = nn.Sequential(*shortcut)  # empty Sequential = identity
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C_in, T)`` -> ``(B, C_out, ceil(T / stride))``."""
        return self.act(self.convs(x) + self.shortcut(x))


class XResNet1dEncoder(ECGPatchEncoder):
    """1-D XResNet (ResNet-D) over the leads, pooled into temporal patch tokens.

    Follows He et al. 2019, "Bag of Tricks for Image Classification with CNNs" (ResNet-D), in the
    1-D form benchmarked on PTB-XL by Strodthoff et al. 2021 (xresnet1d). The stem is three convs
    (the first with stride 2) and a stride-2 max-pool; then one stage per entry of ``widths``, each
    of ``blocks`` basic residual blocks, every stage but the first starting with stride 2 (avg-pool
    shortcut). Deviations for this library: GroupNorm instead of BatchNorm (per-sample statistics,
    so patients stay independent), no zero-initialised last norm of a block (it would give the
    block's convs exactly zero gradient at step 0), a patch-token head instead of the classifier.
    Missing leads, resampling, cropping and the tokens are described in :class:`ECGPatchEncoder`.
    With the defaults at 100 Hz the final map has stride 32 (10 s -> 32 steps -> 10 patches).

    Args:
        d_model: token width ``D``.
        spec: ``{"leads": [...], "fs": float, "n_samples": int}`` (``docs/formats.md`` section 3).
        stem_channels: widths of the three stem convs.
        widths: output width of each residual stage.
        blocks: residual blocks per stage (one int for all stages, or one per stage).
        kernel_size: kernel size of every conv (odd).
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
        stem_channels: Sequence[int] = (16, 32, 32),
        widths: Sequence[int] = (32, 64, 64, 64),
        blocks: int | Sequence[int] = 1,
        kernel_size: int = 5,
        groups: int = 8,
        n_patches: int = 10,
        window_seconds: float | None = None,
        target_fs: float | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(d_model, spec, n_patches, window_seconds, target_fs, dropout)
        blocks = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(stem_channels) != 3 or not widths or len(blocks) != len(widths) or min(blocks) < 1:
            raise ValueError(
                f"XResNet1dEncoder: need 3 stem_channels, >= 1 stage and one blocks count >= 1 per "
                f"stage; got stem_channels={stem_channels}, widths={widths}, blocks={blocks}"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"XResNet1dEncoder: kernel_size must be odd, got {kernel_size}")
        c0, c1, c2 = stem_channels
        layers: list[nn.Module] = [
            conv_norm(2 * self.n_leads, c0, kernel_size, 2, groups),  # 2L: signals + lead mask
            conv_norm(c0, c1, kernel_size, 1, groups),
            conv_norm(c1, c2, kernel_size, 1, groups),
            nn.MaxPool1d(3, stride=2, padding=1),
        ]
        c_in = c2
        for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(ResBlock1d(c_in, width, stride, kernel_size, groups))
                c_in = width
        self.backbone = nn.Sequential(*layers)
        self.build_projection(c_in)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"stem_channels": (8, 8, 16), "widths": (16, 24), "groups": 4, "n_patches": 4}
