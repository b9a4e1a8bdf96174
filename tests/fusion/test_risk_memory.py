"""CoxRiskMemory: enlarged Breslow risk sets, FIFO, gradients only to the current batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.fusion.losses import cox_ph_loss
from clinfuse.fusion.risk_memory import CoxRiskMemory


def test_empty_memory_equals_cox_ph_loss():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(10, generator=g, dtype=torch.float64)
    t = torch.randint(1, 5, (10,), generator=g).to(torch.float64)  # with ties
    e = (torch.rand(10, generator=g) < 0.6).to(torch.float64)
    mem = CoxRiskMemory(size=16)
    assert mem.loss(r, t, e).item() == pytest.approx(cox_ph_loss(r, t, e).item(), rel=1e-12)
    assert len(mem) == 10


def test_loss_with_memory_matches_numpy_hand_computation():
    mem = CoxRiskMemory(size=100)
    r0 = np.array([0.3, -0.5, 1.2, 0.0])
    t0 = np.array([5.0, 1.0, 3.0, 2.0])
    e0 = np.array([1.0, 1.0, 0.0, 1.0])
    mem.push(torch.tensor(r0), torch.tensor(t0), torch.tensor(e0))
    r1 = np.array([0.7, -0.1])
    t1 = np.array([2.0, 4.0])
    e1 = np.array([1.0, 1.0])
    loss = mem.loss(torch.tensor(r1), torch.tensor(t1), torch.tensor(e1))
    # Breslow: only the current events are terms; risk sets = current + memory with time >= t_i
    all_r, all_t = np.concatenate([r1, r0]), np.concatenate([t1, t0])
    ll = 0.0
    for ri, ti in zip(r1, t1):
        ll += ri - np.log(np.exp(all_r[all_t >= ti]).sum())
    # by hand for t=2: {0.7 (t=2), -0.1 (t=4), 0.3 (5), 1.2 (3), 0.0 (2)}
    expected_t2 = 0.7 - np.log(np.exp([0.7, -0.1, 0.3, 1.2, 0.0]).sum())
    expected_t4 = -0.1 - np.log(np.exp([-0.1, 0.3]).sum())
    assert ll == pytest.approx(expected_t2 + expected_t4, rel=1e-12)
    assert loss.item() == pytest.approx(-ll / 2, rel=1e-12)
    assert len(mem) == 6


def test_memory_is_fifo_and_bounded():
    mem = CoxRiskMemory(size=5)
    for k in range(4):
        r = torch.full((3,), float(k))
        mem.loss(r, torch.arange(3.0) + 10 * k, torch.ones(3))
    assert len(mem) == 5
    # the newest 5: last two of batch 2 and all of batch 3
    assert mem.risk.tolist() == [2.0, 2.0, 3.0, 3.0, 3.0]
    assert mem.time.tolist() == [21.0, 22.0, 30.0, 31.0, 32.0]


def test_gradients_flow_only_to_current_batch():
    mem = CoxRiskMemory(size=10)
    old = torch.tensor([0.5, -0.2, 0.1], requires_grad=True)
    mem.push(old * 2, torch.tensor([3.0, 4.0, 5.0]), torch.tensor([1.0, 0.0, 1.0]))
    assert not mem.risk.requires_grad
    cur = torch.tensor([0.3], requires_grad=True)  # batch size 1, as with WSI
    loss = mem.loss(cur, torch.tensor([2.0]), torch.tensor([1.0]))
    loss.backward()
    assert old.grad is None
    assert cur.grad is not None and cur.grad.abs().item() > 0  # would be 0 without the memory
    assert cox_ph_loss(cur.detach(), torch.tensor([2.0]), torch.tensor([1.0])).item() == 0.0


def test_no_events_is_finite_with_zero_gradient():
    mem = CoxRiskMemory(size=10)
    mem.push(torch.randn(4), torch.rand(4), torch.ones(4))
    r = torch.randn(3, requires_grad=True)
    loss = mem.loss(r, torch.rand(3), torch.zeros(3))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.equal(r.grad, torch.zeros(3))
    assert len(mem) == 7


def test_update_false_and_bad_shapes():
    mem = CoxRiskMemory(size=10)
    mem.loss(torch.zeros(2), torch.ones(2), torch.ones(2), update=False)
    assert len(mem) == 0
    with pytest.raises(ValueError, match=r"\(2,\), \(3,\)"):
        mem.loss(torch.zeros(2), torch.ones(3), torch.ones(2))
