"""XResNet1dEncoder: ResNet-D structure (three-conv stem, avg-pool shortcuts), no batch statistics,
and that it learns a simple ECG property."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clinfuse.encoders.xresnet1d import ResBlock1d, XResNet1dEncoder

SPEC = {"leads": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"], "fs": 100.0, "n_samples": 1000}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread avoids OpenMP start-up and oversubscription costs on shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_default_backbone_stem_and_total_stride():
    enc = XResNet1dEncoder(64, SPEC)
    convs = [m for m in enc.backbone[:3].modules() if isinstance(m, nn.Conv1d)]
    assert [c.in_channels for c in convs] == [24, 16, 32]  # 2L = 12 signals + 12 lead-mask channels
    assert [c.stride[0] for c in convs] == [2, 1, 1]
    assert isinstance(enc.backbone[3], nn.MaxPool1d)
    h = enc.backbone(torch.zeros(2, 24, 1000))
    # 1000 -> conv/2 500 -> maxpool/2 250 -> stage 1 250 -> 125 -> 63 -> 32 (ceil at each stride 2)
    assert h.shape == (2, 64, 32)


def test_downsampling_shortcut_is_average_pooling():
    """ResNet-D: with the conv path switched off, a stride-2 block returns ReLU(avg of sample pairs)."""
    block = ResBlock1d(1, 1, stride=2, kernel_size=3, groups=1)
    with torch.no_grad():
        for conv in (m for m in block.convs.modules() if isinstance(m, nn.Conv1d)):
            conv.weight.zero_()
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    torch.testing.assert_close(block(x), torch.tensor([[[1.5, 3.5, 5.0]]]))  # last: a lone sample
    torch.testing.assert_close(block(-x), torch.zeros(1, 1, 3))  # ReLU after the sum
    # a width change adds a 1x1 conv + norm to the shortcut, after the pooling
    wide = ResBlock1d(2, 4, stride=2, kernel_size=3, groups=2)
    assert isinstance(wide.shortcut[0], nn.AvgPool1d) and wide.shortcut[1][0].kernel_size == (1,)


def test_no_batch_statistics_even_in_training():
    enc = XResNet1dEncoder(16, XResNet1dEncoder.example_spec(), **XResNet1dEncoder.example_kwargs(), dropout=0.0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    enc.train()
    x = XResNet1dEncoder.example_inputs(batch_size=3)
    full = enc(x).tokens
    alone = enc({k: v[:1] for k, v in x.items()}).tokens
    torch.testing.assert_close(alone[0], full[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"kernel_size": 4}, {"blocks": [1, 2, 3]}, {"stem_channels": [8, 8]}])
def test_bad_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError, match="XResNet1dEncoder"):
        XResNet1dEncoder(16, SPEC, widths=[16, 16], **kwargs)


def test_learns_heart_rate_from_two_leads():
    """Slow (0.9 Hz) vs fast (1.7 Hz) spiky 'beats' with random phase and noise: a linear read-out
    of the mean token must separate them after a few dozen steps (the design actually learns)."""
    g = torch.Generator().manual_seed(0)
    spec = {"leads": ["I", "II"], "fs": 100.0, "n_samples": 300}
    n = 16
    rate = torch.where(torch.arange(n) % 2 == 0, 0.9, 1.7)
    t = torch.arange(300) / 100.0
    phase = torch.rand(n, 2, 1, generator=g) * 2 * math.pi
    beats = torch.cos(2 * math.pi * rate[:, None, None] * t + phase).clamp(min=0) ** 8  # narrow peaks
    x = {"signal": beats + 0.05 * torch.randn(n, 2, 300, generator=g),
         "lead_mask": torch.ones(n, 2, dtype=torch.bool), "present": torch.ones(n, dtype=torch.bool)}  # fmt: skip
    y = (rate > 1.0).float()
    torch.manual_seed(0)
    enc = XResNet1dEncoder(16, spec, **XResNet1dEncoder.example_kwargs())
    head = nn.Linear(16, 1)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(30):
        logit = head(enc(x).tokens.mean(1))[:, 0]
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        acc = ((head(enc(x).tokens.mean(1))[:, 0] > 0).float() == y).float().mean()
    assert loss.item() < 0.3 and acc == 1.0, (loss.item(), acc.item())
