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


def _objective(loss, n_causes=1, k=4):
    from clinfuse.fusion.survival_objective import SurvivalObjective

    obj = SurvivalObjective(loss, n_bins=k, n_causes=n_causes)
    obj.edges.copy_(torch.tensor([0.0, 10.0, 20.0, 40.0, math.inf]))
    return obj


def test_objective_with_one_cause_equals_pmf():
    logits, bins, cause = _data(n=10, k=4, r=1, seed=4)
    cr, pmf = _objective("pmf_cr", 1), _objective("pmf")
    assert cr.n_outputs == pmf.n_outputs == 5
    time = torch.tensor([5.0, 15.0, 25.0, 45.0, 9.0, 11.0, 39.0, 41.0, 1.0, 100.0], dtype=torch.float64)
    assert cr.loss(logits, time, (cause > 0).double(), cause=cause).item() == pytest.approx(
        pmf.loss(logits, time, (cause > 0).double()).item(), abs=1e-12)
    t = torch.tensor([0.0, 9.9, 10.0, 30.0, 1e6], dtype=torch.float64)
    torch.testing.assert_close(cr.survival(logits, t), pmf.survival(logits, t))
    torch.testing.assert_close(cr.risk(logits), pmf.risk(logits))
    torch.testing.assert_close(cr.median(logits), pmf.median(logits))


def test_objective_cumulative_incidence_between_bin_ends_and_sums_to_one_minus_survival():
    obj = _objective("deephit_cr", 3)
    logits, *_ = _data(n=6, k=4, r=3, seed=5)
    assert obj.competing and obj.n_outputs == 13
    t = torch.tensor([0.0, 5.0, 10.0, 25.0, 40.0, 1e9], dtype=torch.float64)
    cif = obj.cumulative_incidence_at(logits, t)  # (B, 3, T)
    assert cif.shape == (6, 3, 6)
    torch.testing.assert_close(cif[..., 0], torch.zeros(6, 3, dtype=torch.float64))  # nothing at t = 0
    ends = obj.cumulative_incidence(logits)  # (B, 3, K) at the bin ends 10, 20, 40(, inf)
    torch.testing.assert_close(cif[..., 1], ends[..., 0] / 2)  # t = 5: halfway through bin 0, linear from 0
    torch.testing.assert_close(cif[..., 2], ends[..., 0])  # t = 10: end of bin 0
    torch.testing.assert_close(cif[..., 3], 0.75 * ends[..., 1] + 0.25 * ends[..., 2])  # t = 25: a quarter into [20, 40)
    torch.testing.assert_close(cif[..., 4], ends[..., 2])  # t = 40: the last finite edge, then held
    torch.testing.assert_close(cif[..., 5], ends[..., 2])
    torch.testing.assert_close(obj.survival(logits, t) + cif.sum(1), torch.ones(6, 6, dtype=torch.float64))


def test_objective_errors():
    from clinfuse.fusion.survival_objective import SurvivalObjective

    with pytest.raises(ValueError, match="n_causes >= 1"):
        SurvivalObjective("pmf_cr", n_bins=4, n_causes=0)
    obj = _objective("pmf_cr", 2)
    logits, bins, cause = _data(n=4, k=4, r=2, seed=6)
    time = torch.tensor([5.0, 15.0, 25.0, 45.0])
    with pytest.raises(ValueError, match="needs the 'cause' label"):
        obj.loss(logits, time, torch.ones(4))
    with pytest.raises(ValueError, match="cause must be 0 exactly where event is 0"):
        obj.loss(logits, time, torch.zeros(4), cause=torch.tensor([0, 1, 0, 0]))
    with pytest.raises(ValueError, match="competing-risks loss"):
        _objective("pmf").cumulative_incidence(logits[:, :5])


def test_early_events_of_any_cause_rank_higher():
    obj = _objective("pmf_cr", 2)
    logits = torch.full((3, 9), -10.0, dtype=torch.float64)
    logits[0, 0] = 5.0  # cause 1, first bin
    logits[1, 4 + 1] = 5.0  # cause 2, second bin
    logits[2, 8] = 5.0  # nothing by the end of the last bin
    risk = obj.risk(logits)
    assert risk[0] > risk[1] > risk[2]
    cif = obj.cumulative_incidence(logits)
    assert cif[0, 0, 0] > 0.99 and cif[1, 1, 1] > 0.99 and cif[2].sum(0)[-1] < 0.01
