"""Discrete-time survival losses against hand computations (plain math / numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clinfuse.fusion.discrete_time import (
    deephit_loss,
    discretize,
    logistic_hazard_nll,
    pmf_nll,
    quantile_bins,
    survival_from_hazards,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_quantile_bins_use_event_times_only():
    times = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 100.0, 200.0, 300.0])
    events = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0])
    edges = quantile_bins(times, events, n_bins=4)
    expected = np.concatenate([[1.0], np.quantile([1.0, 2.0, 3.0, 4.0, 5.0], [0.25, 0.5, 0.75]), [np.inf]])
    np.testing.assert_allclose(edges.numpy(), expected)  # onset 1, then 2, 3, 4, inf: the censored 100s ignored
    # bin 0 holds every time below q_1 from 0 on, the onset (first event) included
    assert discretize(torch.tensor([0.0, 0.5, 1.9, 2.0, 3.5, 4.0, 300.0]), edges).tolist() == [0, 0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match="negative"):
        discretize(torch.tensor([-0.5]), edges)
    with pytest.raises(ValueError, match="no events"):
        quantile_bins(times, torch.zeros(8), n_bins=4)


def test_logistic_hazard_nll_by_hand():
    logits = torch.tensor([[0.2, -1.0, 0.5], [1.5, 0.3, -0.4]], dtype=torch.float64)
    bin = torch.tensor([1, 1])
    event = torch.tensor([1, 0])
    h = [[_sig(v) for v in row] for row in logits.tolist()]
    # sample 0: event in bin 1 -> survives bin 0, hazard in bin 1
    l0 = -(math.log(1 - h[0][0]) + math.log(h[0][1]))
    # sample 1: censored in bin 1 -> survives bins 0 and 1 (MCAT convention)
    l1 = -(math.log(1 - h[1][0]) + math.log(1 - h[1][1]))
    assert logistic_hazard_nll(logits, bin, event).item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


def test_pmf_nll_by_hand():
    logits = torch.tensor([[0.1, 0.7, -0.3, 0.2], [1.0, -2.0, 0.4, 0.0]], dtype=torch.float64)
    bin, event = torch.tensor([2, 0]), torch.tensor([1, 0])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    l0 = -math.log(p[0, 2])
    l1 = -math.log(p[1, 1:].sum())  # censored in bin 0: mass strictly later
    assert pmf_nll(logits, bin, event).item() == pytest.approx((l0 + l1) / 2, rel=1e-12)


def test_hazard_nll_equals_pmf_nll_for_the_same_distribution():
    g = torch.Generator().manual_seed(0)
    B, K = 16, 5
    haz_logits = torch.randn(B, K, generator=g, dtype=torch.float64) * 2
    h = torch.sigmoid(haz_logits)
    S = torch.cumprod(1 - h, 1)
    S_prev = torch.cat([torch.ones(B, 1, dtype=torch.float64), S[:, :-1]], 1)
    pmf = torch.cat([h * S_prev, S[:, -1:]], 1)  # (B, K+1), sums to one
    assert torch.allclose(pmf.sum(1), torch.ones(B, dtype=torch.float64))
    bin = torch.randint(0, K, (B,), generator=g)
    event = torch.randint(0, 2, (B,), generator=g)
    a = logistic_hazard_nll(haz_logits, bin, event)
    b = pmf_nll(pmf.log(), bin, event)
    assert a.item() == pytest.approx(b.item(), rel=1e-10)


def test_survival_from_hazards_monotone_in_unit_interval():
    logits = torch.randn(8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 5
    logits[0] = 40.0  # certain death: S -> 0, no NaN
    logits[1] = -40.0  # certain survival: S -> 1
    S = survival_from_hazards(logits)
    assert S.shape == (8, 6) and torch.isfinite(S).all()
    assert ((S >= 0) & (S <= 1)).all()
    assert (S[:, 1:] <= S[:, :-1]).all()
    h = torch.sigmoid(logits[2]).tolist()
    assert S[2, 2].item() == pytest.approx((1 - h[0]) * (1 - h[1]) * (1 - h[2]), rel=1e-10)


def test_deephit_by_hand():
    logits = torch.tensor([[0.5, 0.1, -0.2], [0.0, 0.3, 0.9], [0.2, -0.5, 0.4]], dtype=torch.float64)
    bin, event = torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    cdf = np.cumsum(p, 1)
    nll = -(math.log(p[0, 0]) + math.log(p[1, 1]) + math.log(p[2, 2])) / 3
    # comparable pairs: (0,1) and (0,2) [bin 0 < bin 1]; (1,2) [same bin, 2 censored]
    sigma = 0.1
    pairs = [(0, 1), (0, 2), (1, 2)]
    rank = np.mean([math.exp(-(cdf[i, bin[i]] - cdf[j, bin[i]]) / sigma) for i, j in pairs])
    got = deephit_loss(logits, bin, event, alpha=0.3, sigma=sigma).item()
    assert got == pytest.approx(0.3 * nll + 0.7 * rank, rel=1e-12)
    assert deephit_loss(logits, bin, event, alpha=1.0).item() == pytest.approx(
        pmf_nll(logits, bin, event).item(), rel=1e-12
    )


def test_deephit_ranking_zero_when_perfectly_ordered_positive_otherwise():
    bin, event = torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0])
    good = torch.full((3, 4), -50.0)
    good[0, 0] = good[1, 1] = good[2, 3] = 50.0  # each sample puts all mass in its own bin / beyond
    rank_good = deephit_loss(good, bin, event, alpha=0.0, sigma=0.01).item()
    assert rank_good < 1e-30
    bad = good.flip(0)  # the order reversed
    assert deephit_loss(bad, bin, event, alpha=0.0, sigma=0.01).item() > 0.5


def test_losses_finite_without_events():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, requires_grad=True)
    bin, event = torch.tensor([0, 1, 2, 2]), torch.zeros(4)
    for loss in (logistic_hazard_nll(logits, bin, event),):
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    logits4 = torch.randn(4, 4, requires_grad=True)
    for fn in (pmf_nll, deephit_loss):
        loss = fn(logits4, bin, event)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits4.grad).all()


def test_extreme_logits_stay_finite():
    logits = torch.tensor([[100.0, -100.0, 100.0, -100.0]], requires_grad=True)
    for fn, lg in ((logistic_hazard_nll, logits[:, :3]), (pmf_nll, logits), (deephit_loss, logits)):
        loss = fn(lg, torch.tensor([1]), torch.tensor([1]))
        assert torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(g).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(4, 3\), \(5,\), \(4,\)"):
        logistic_hazard_nll(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(4,\), \(4,\), \(4,\)"):
        pmf_nll(torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        deephit_loss(torch.zeros(2, 3), torch.tensor([0, 2]), torch.ones(2))  # bin 2 needs 4 columns
    with pytest.raises(ValueError, match=r"\(3,\), \(2,\)"):
        quantile_bins(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        discretize(torch.ones(2, 2), torch.tensor([0.0, 1.0, float("inf")]))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        survival_from_hazards(torch.zeros(3))
