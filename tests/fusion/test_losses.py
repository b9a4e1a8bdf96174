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
