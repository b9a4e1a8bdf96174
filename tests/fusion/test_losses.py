"""The Cox partial likelihood against lifelines and a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter

from clinfuse.fusion.losses import cox_ph_loss


def test_cox_loss_matches_hand_computation_with_ties():
    # times 3, 2, 2, 1; events 1, 1, 0, 1 ; risks a..d.  Breslow risk sets:
    # t=3: {0}; t=2 (ties 1,2): {0,1,2}; t=1: all.
    r = torch.tensor([0.5, -0.2, 0.3, 1.0], dtype=torch.float64)
    t = torch.tensor([3.0, 2.0, 2.0, 1.0], dtype=torch.float64)
    e = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    ex = r.exp()
    ll = (r[0] - math.log(ex[0])) + (r[1] - math.log(ex[0] + ex[1] + ex[2])) + (r[3] - math.log(ex.sum()))
    assert cox_ph_loss(r, t, e).item() == pytest.approx(-ll.item() / 3, rel=1e-12)
    # permutation invariance
    perm = torch.tensor([2, 0, 3, 1])
    assert cox_ph_loss(r[perm], t[perm], e[perm]).item() == pytest.approx(-ll.item() / 3, rel=1e-12)


def test_cox_loss_equals_lifelines_log_likelihood_without_ties():
    rng = np.random.default_rng(0)
    n = 80
    x = rng.normal(size=n)
    time = rng.exponential(scale=np.exp(-0.8 * x)) + rng.uniform(0, 1e-3, size=n)  # no ties
    event = rng.uniform(size=n) < 0.7
    df = pd.DataFrame({"x": x, "T": time, "E": event.astype(int)})
    cph = CoxPHFitter().fit(df, duration_col="T", event_col="E")
    beta = cph.params_["x"]
    risk = torch.tensor(beta * x, dtype=torch.float64)
    loss = cox_ph_loss(risk, torch.tensor(time), torch.tensor(event, dtype=torch.float64))
    # lifelines reports the partial log-likelihood at its fitted beta (Efron == Breslow without ties)
    assert (-loss.item() * event.sum()) == pytest.approx(cph.log_likelihood_, rel=1e-6)


def test_cox_loss_without_events_is_finite_with_zero_gradient():
    r = torch.randn(5, requires_grad=True)
    loss = cox_ph_loss(r, torch.arange(1.0, 6.0), torch.zeros(5))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.equal(r.grad, torch.zeros(5))


def test_cox_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(4,\), \(3,\)"):
        cox_ph_loss(torch.zeros(4), torch.ones(3), torch.ones(4))


# --- tied event times: Efron against lifelines, Breslow against scikit-survival -------------------


def _tied_cohort(seed: int = 1, n: int = 120):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    # integer times: many tied event times, and censored samples tied with events
    time = np.ceil(rng.exponential(scale=4.0 * np.exp(-0.7 * x))).astype(float)
    event = rng.uniform(size=n) < 0.7
    assert len(np.unique(time[event])) < event.sum()  # the cohort really has tied event times
    return x, time, event


def test_cox_efron_equals_lifelines_log_likelihood_with_ties():
    x, time, event = _tied_cohort()
    df = pd.DataFrame({"x": x, "T": time, "E": event.astype(int)})
    cph = CoxPHFitter().fit(df, duration_col="T", event_col="E")  # lifelines handles ties by Efron
    # lifelines centres covariates; the partial likelihood is invariant to that shift
    risk = torch.tensor(cph.params_["x"] * x, dtype=torch.float64)
    loss = cox_ph_loss(risk, torch.tensor(time), torch.tensor(event, dtype=torch.float64), ties="efron")
    assert (-loss.item() * event.sum()) == pytest.approx(cph.log_likelihood_, rel=1e-6)
    breslow = cox_ph_loss(risk, torch.tensor(time), torch.tensor(event, dtype=torch.float64))
    assert abs(breslow.item() - loss.item()) > 1e-4  # ties matter on this cohort


def test_cox_breslow_equals_scikit_survival_with_ties():
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.linear_model.coxph import CoxPHOptimizer

    x, time, event = _tied_cohort(seed=2)
    X = x[:, None]
    y = np.array(list(zip(event, time)), dtype=[("event", bool), ("time", float)])
    est = CoxPHSurvivalAnalysis(ties="breslow").fit(X, y)
    w = est.coef_
    # CoxPHOptimizer.nlog_likelihood is the negative Breslow log-likelihood divided by n SAMPLES
    opt = CoxPHOptimizer(X, event, time, np.zeros(1), "breslow")
    sk_log_lik = -opt.nlog_likelihood(w) * len(time)
    risk = torch.tensor(X @ w, dtype=torch.float64)
    loss = cox_ph_loss(risk, torch.tensor(time), torch.tensor(event, dtype=torch.float64), ties="breslow")
    assert (-loss.item() * event.sum()) == pytest.approx(sk_log_lik, rel=1e-6)


def test_cox_efron_hand_computation():
    # times 2, 2, 2, 1 ; events 1, 1, 0, 1. Group t=2: D={0,1}, R={0,1,2}; group t=1: D={3}, R=all.
    r = torch.tensor([0.4, -0.3, 0.8, 0.1], dtype=torch.float64)
    t = torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64)
    e = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    ex = [math.exp(v) for v in r.tolist()]
    s_r, s_d = ex[0] + ex[1] + ex[2], ex[0] + ex[1]
    ll = (0.4 - 0.3) - math.log(s_r) - math.log(s_r - 0.5 * s_d) + 0.1 - math.log(sum(ex))
    assert cox_ph_loss(r, t, e, ties="efron").item() == pytest.approx(-ll / 3, rel=1e-12)
    perm = torch.tensor([3, 1, 2, 0])
    assert cox_ph_loss(r[perm], t[perm], e[perm], ties="efron").item() == pytest.approx(-ll / 3, rel=1e-12)


def test_cox_efron_equals_breslow_without_tied_events():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(50, generator=g, dtype=torch.float64)
    t = torch.randperm(50, generator=g).to(torch.float64)
    e = (torch.rand(50, generator=g) < 0.6).to(torch.float64)
    assert cox_ph_loss(r, t, e, ties="efron").item() == pytest.approx(
        cox_ph_loss(r, t, e, ties="breslow").item(), rel=1e-12
    )


def test_cox_efron_gradients_finite_and_zero_without_events():
    r = torch.tensor([50.0, -50.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    cox_ph_loss(r, t, torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64), ties="efron").backward()
    assert torch.isfinite(r.grad).all()
    r.grad = None
    loss = cox_ph_loss(r, t, torch.zeros(4, dtype=torch.float64), ties="efron")
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(r.grad, torch.zeros(4, dtype=torch.float64))


def test_cox_rejects_unknown_ties():
    with pytest.raises(ValueError, match="ties"):
        cox_ph_loss(torch.zeros(3), torch.ones(3), torch.ones(3), ties="exact")  # type: ignore[arg-type]


def test_cox_efron_gradcheck_with_ties():
    r = torch.tensor([0.4, -0.3, 0.8, 0.1, 1.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([2.0, 2.0, 2.0, 1.0, 2.0], dtype=torch.float64)
    e = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: cox_ph_loss(x, t, e, ties="efron"), (r,))
