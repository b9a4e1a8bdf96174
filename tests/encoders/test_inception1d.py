"""Inception1dEncoder: module structure (parallel kernels + max-pool branch), a residual shortcut every
three modules, the published configuration, and that it learns a simple ECG property."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clinfuse.encoders.inception1d import Inception1dEncoder, InceptionModule1d

SPEC = {"leads": ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"], "fs": 100.0, "n_samples": 1000}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread avoids OpenMP start-up and oversubscription costs on shared CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_module_branches_and_max_pool_branch_by_hand():
    module = InceptionModule1d(1, 1, kernel_sizes=(5, 3), bottleneck=1, groups=1)
    assert [c.kernel_size[0] for c in module.convs] == [5, 3]
    seen = {}
    module.out.register_forward_hook(lambda m, args, out: seen.update(pre=args[0]))
    with torch.no_grad():
        module.pool_branch[1].weight.fill_(1.0)
        out = module(torch.tensor([[[1.0, 5.0, 2.0, 0.0, 3.0]]]))
    assert out.shape == (1, 3, 5)  # (K + 1) * n_filters channels, length kept
    # the last concatenated channel is the max over each sample's 3-neighbourhood
    torch.testing.assert_close(seen["pre"][0, 2], torch.tensor([5.0, 5.0, 5.0, 3.0, 3.0]))


@pytest.mark.parametrize(("depth", "closing"), [(6, ["2", "5"]), (4, ["2", "3"]), (2, ["1"])])
def test_a_residual_shortcut_closes_every_third_module(depth, closing):
    enc = Inception1dEncoder(16, SPEC, depth=depth)
    assert list(enc.shortcuts) == closing
    assert len(enc.blocks) == depth


def test_residual_shortcut_is_used():
    """Switching the modules' output to zero leaves ReLU(shortcut(input)) after each group."""
    enc = Inception1dEncoder(16, SPEC, **{**Inception1dEncoder.example_kwargs(), "depth": 3})
    with torch.no_grad():
        for block in enc.blocks:
            block.out[0].weight.zero_()
            block.out[0].bias.zero_()
    x = torch.randn(2, 24, 64, generator=torch.Generator().manual_seed(0))
    expect = torch.relu(enc.shortcuts["2"](enc.input_pool(x)))
    torch.testing.assert_close(enc.backbone(x), expect)
    assert enc.backbone(x).shape == (2, 16, 16)  # input_stride 4, (3 + 1) * 4 channels


def test_published_configuration_runs_at_full_rate():
    enc = Inception1dEncoder(16, SPEC, n_filters=32, kernel_sizes=(39, 19, 9), bottleneck=32, input_stride=1)
    assert enc.backbone(torch.zeros(1, 24, 100)).shape == (1, 128, 100)
    out = enc(Inception1dEncoder.example_inputs(batch_size=2))
    assert out.tokens.shape == (2, 10, 16) and torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("kwargs", [{"kernel_sizes": (9, 4)}, {"depth": 0}, {"input_stride": 0}])
def test_bad_hyperparameters_raise(kwargs):
    with pytest.raises(ValueError, match="Inception1dEncoder"):
        Inception1dEncoder(16, SPEC, **kwargs)


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
    enc = Inception1dEncoder(16, spec, **Inception1dEncoder.example_kwargs())
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
