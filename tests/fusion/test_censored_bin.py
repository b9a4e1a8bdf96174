"""``censored_bin="observed"``: a patient censored inside a bin survives only the part it was seen."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lifelines import KaplanMeierFitter
from sksurv.nonparametric import cumulative_incidence_competing_risks

from clinfuse.fusion.competing_risks import cr_deephit_loss, cr_pmf_nll
from clinfuse.fusion.discrete_time import deephit_loss, logistic_hazard_nll, pmf_nll
from clinfuse.fusion.survival_objective import SurvivalObjective


def test_hand_computed_likelihood_of_a_patient_censored_halfway_through_its_bin():
    h = torch.tensor([[0.2, 0.4, 0.5]], dtype=torch.float64)  # hazards of bins 0, 1, 2
    bin_, event, share = torch.tensor([1]), torch.tensor([0.0]), torch.tensor([0.5])
    want = -(math.log(0.8) + math.log(1 - 0.5 * 0.4))  # survives bin 0, then half of bin 1
    assert logistic_hazard_nll(torch.logit(h), bin_, event, share).item() == pytest.approx(want, abs=1e-12)
    p = torch.tensor([[0.2, 0.32, 0.24, 0.24]], dtype=torch.float64)  # the same model as a PMF (+ beyond)
    assert pmf_nll(p.log(), bin_, event, share).item() == pytest.approx(want, abs=1e-12)
    cells = torch.tensor([[0.1, 0.2, 0.1, 0.1, 0.12, 0.14, 0.24]], dtype=torch.float64)  # 2 causes x 3 bins + beyond
    seen = -math.log(1 - 0.1 - 0.1 - 0.5 * (0.2 + 0.12))  # S(c) = 1 - bin 0 - half of bin 1, both causes
    assert cr_pmf_nll(cells.log(), bin_, event.long(), 2, share).item() == pytest.approx(seen, abs=1e-12)


@pytest.mark.parametrize("share", [None, 1.0])
def test_a_whole_bin_share_is_mcats_convention(share):
    g = torch.Generator().manual_seed(0)
    logits, b = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 4, (12,), generator=g)
    event = (torch.arange(12) % 3 == 0).double()
    s = None if share is None else torch.full((12,), share, dtype=torch.float64)
    torch.testing.assert_close(logistic_hazard_nll(logits[:, :4], b, event, s), logistic_hazard_nll(logits[:, :4], b, event))
    torch.testing.assert_close(pmf_nll(logits, b, event, s), pmf_nll(logits, b, event))
    torch.testing.assert_close(deephit_loss(logits, b, event, censored_share=s), deephit_loss(logits, b, event))
    cause = torch.where(event > 0, 1 + torch.arange(12) % 2, 0)
    cr = torch.randn(12, 2 * 4 + 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(cr_pmf_nll(cr, b, cause, 2, s), cr_pmf_nll(cr, b, cause, 2))
    torch.testing.assert_close(cr_deephit_loss(cr, b, cause, 2, censored_share=s), cr_deephit_loss(cr, b, cause, 2))


def test_bad_shares_are_refused():
    logits, b, e = torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), torch.zeros(3)
    with pytest.raises(ValueError, match=r"censored_share must be \(3,\) values in \[0, 1\]"):
        logistic_hazard_nll(logits, b, e, torch.tensor([0.5, 1.5, 0.0]))
    with pytest.raises(ValueError, match="censored_bin must be 'whole' or 'observed'"):
        SurvivalObjective("pmf", n_bins=4, censored_bin="half")


def _covariate_free_fit(obj: SurvivalObjective, time, event, cause=None) -> torch.Tensor:
    """Maximum-likelihood logits shared by every patient (no covariates)."""
    theta = torch.zeros(obj.n_outputs, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = obj.loss(theta.expand(len(time), -1), time, event, cause=cause)
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach()[None, :]


def _censored_cohort(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    t_event, censor = rng.exponential(10.0, n), rng.uniform(0.0, 25.0, n)  # about 45% censored
    return np.minimum(t_event, censor), (t_event <= censor).astype(float)


def test_observed_share_recovers_kaplan_meier_where_the_whole_bin_overstates_survival():
    time, event = _censored_cohort()
    t, e = torch.tensor(time), torch.tensor(event)
    fits = {}
    for mode in ("whole", "observed"):
        obj = SurvivalObjective("logistic_hazard", n_bins=4, censored_bin=mode).fit_bins(t, e)
        ends = obj.edges[1:-1]
        fits[mode] = obj.survival(_covariate_free_fit(obj, t, e), ends)[0].numpy()
    km = KaplanMeierFitter().fit(time, event).survival_function_at_times(ends.numpy()).to_numpy()
    assert np.abs(fits["observed"] - km).max() < 0.006
    assert (fits["whole"] - km).max() > 0.02  # the whole-bin convention's upward bias (0.027 here)


def test_observed_share_recovers_aalen_johansen_for_competing_causes():
    time, event = _censored_cohort(seed=1)
    rng = np.random.default_rng(2)
    cause = np.where(event > 0, 1 + (rng.uniform(size=len(time)) < 0.35), 0)
    t, e, c = torch.tensor(time), torch.tensor(event), torch.tensor(cause)
    obj = SurvivalObjective("pmf_cr", n_bins=4, n_causes=2, censored_bin="observed").fit_bins(t, e)
    ends = obj.edges[1:-1]
    cif = obj.cumulative_incidence_at(_covariate_free_fit(obj, t, e, c), ends)[0].numpy()  # (2, 3)
    x, aj = cumulative_incidence_competing_risks(cause, time)
    at = np.searchsorted(x, ends.numpy(), side="right") - 1
    np.testing.assert_allclose(cif, aj[1:, at], atol=0.01)
