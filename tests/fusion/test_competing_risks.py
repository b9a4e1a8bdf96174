"""Competing-risks losses and cumulative incidence: single-risk equality, hand-computed values, a
brute-force ranking term, and the covariate-free fit against scikit-survival's Aalen-Johansen
estimator on a real competing-risks cohort (load_cgvhd)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clinfuse.fusion.competing_risks import cr_deephit_loss, cr_pmf_nll, cumulative_incidence
from clinfuse.fusion.discrete_time import deephit_loss, discretize, pmf_nll, quantile_bins


def _data(n=24, k=4, r=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, r * k + 1, generator=g, dtype=torch.float64)
    bins = torch.randint(0, k, (n,), generator=g)
    cause = torch.randint(0, r + 1, (n,), generator=g)
    return logits, bins, cause


def test_one_cause_equals_the_single_risk_losses():
    logits, bins, cause = _data(r=1, seed=1)
    assert cr_pmf_nll(logits, bins, cause, 1).item() == pytest.approx(pmf_nll(logits, bins, cause).item(), abs=1e-12)
    for alpha, sigma in ((0.5, 0.1), (0.2, 1.0)):
        want = deephit_loss(logits, bins, cause, alpha=alpha, sigma=sigma).item()
        assert cr_deephit_loss(logits, bins, cause, 1, alpha, sigma).item() == pytest.approx(want, abs=1e-12)


def test_likelihood_by_hand():
    # R = 2 causes, K = 2 bins: columns (c1,b0) (c1,b1) (c2,b0) (c2,b1) beyond
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]] * 3, dtype=torch.float64)
    p = F.softmax(logits[0], 0).numpy()
    bins, cause = torch.tensor([1, 0, 0]), torch.tensor([2, 1, 0])
    want = -(math.log(p[3]) + math.log(p[0]) + math.log(p[1] + p[3] + p[4])) / 3  # censored in bin 0: bins > 0 + beyond
    assert cr_pmf_nll(logits, bins, cause, 2).item() == pytest.approx(want, rel=1e-12)
    cif = cumulative_incidence(logits, 2)[0].numpy()
    np.testing.assert_allclose(cif, [[p[0], p[0] + p[1]], [p[2], p[2] + p[3]]], rtol=1e-12)


def test_ranking_term_equals_a_loop_over_pairs():
    logits, bins, cause = _data(n=15, k=3, r=3, seed=2)
    sigma = 0.3
    cif = cumulative_incidence(logits, 3)
    total, pairs = 0.0, 0
    for i in range(15):
        for j in range(15):
            if cause[i] == 0 or i == j:
                continue
            if bins[i] < bins[j] or (bins[i] == bins[j] and cause[j] == 0):
                r, k = int(cause[i]) - 1, int(bins[i])
                total += math.exp(-(cif[i, r, k] - cif[j, r, k]).item() / sigma)
                pairs += 1
    nll = cr_pmf_nll(logits, bins, cause, 3).item()
    got = cr_deephit_loss(logits, bins, cause, 3, alpha=0.25, sigma=sigma).item()
    assert got == pytest.approx(0.25 * nll + 0.75 * total / pairs, rel=1e-10)


def test_finite_with_no_event_and_gradients_flow():
    logits, bins, _ = _data(seed=3)
    logits.requires_grad_(True)
    loss = cr_deephit_loss(logits, bins, torch.zeros_like(bins), 2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_bad_labels_are_named():
    logits, bins, cause = _data()
    with pytest.raises(ValueError, match=r"causes must be integers in \[0, 2\]"):
        cr_pmf_nll(logits, bins, torch.full_like(cause, 3), 2)
    with pytest.raises(ValueError, match=r"bins must lie in \[0, 4\)"):
        cr_pmf_nll(logits, torch.full_like(bins, 4), cause, 2)
    with pytest.raises(ValueError, match=r"R \* K \+ 1"):
        cr_pmf_nll(logits[:, :-1], bins, cause, 2)


def test_covariate_free_fit_equals_aalen_johansen_on_real_data():
    """The maximum-likelihood CIF of a model without covariates is the Aalen-Johansen estimate on
    the binned times (events at the end of their bin, censoring just after the events)."""
    from sksurv.datasets import load_cgvhd
    from sksurv.nonparametric import cumulative_incidence_competing_risks

    _, y = load_cgvhd()
    time = torch.as_tensor(y["ftime"], dtype=torch.float64)
    cause = torch.as_tensor(y["status"])
    n_causes, k = int(cause.max()), 3
    bins = discretize(time, quantile_bins(time, (cause > 0).long(), k))

    theta = torch.zeros(1, n_causes * k + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = cr_pmf_nll(theta.expand(len(time), -1), bins, cause, n_causes)
        loss.backward()
        return loss

    opt.step(closure)
    cif = cumulative_incidence(theta.detach(), n_causes)[0].numpy()  # (R, K)

    exit_time = bins.numpy() + 1.0 + 0.5 * (cause.numpy() == 0)  # censored after the bin's events
    x, aj = cumulative_incidence_competing_risks(cause.numpy(), exit_time)
    at = np.searchsorted(x, np.arange(1, k + 1), side="right") - 1  # the AJ step at each bin end
    np.testing.assert_allclose(cif, aj[1:, at], atol=2e-6)
    assert 0.5 < cif[0, -1] < 1.0  # cGvHD, the dominant cause (86 of 100)
