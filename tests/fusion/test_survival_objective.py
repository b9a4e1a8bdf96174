"""SurvivalObjective: Cox and discrete-time losses behind one interface (loss, risk, S(t), median)."""

from __future__ import annotations

import math

import pytest
import torch

from clinfuse.fusion.discrete_time import deephit_loss, discretize, logistic_hazard_nll, pmf_nll
from clinfuse.fusion.losses import cox_ph_loss
from clinfuse.fusion.risk_memory import CoxRiskMemory
from clinfuse.fusion.survival_objective import SurvivalObjective

TIME = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
EVENT = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0])


def test_output_widths_and_bins_fitted_on_event_times():
    assert SurvivalObjective("cox").n_outputs == 1
    assert SurvivalObjective("logistic_hazard", n_bins=4).n_outputs == 4
    assert SurvivalObjective("pmf", n_bins=4).n_outputs == 5
    obj = SurvivalObjective("logistic_hazard", n_bins=2)
    assert not obj.fitted
    obj.fit_bins(TIME, EVENT)
    # event times 1, 3, 4, 6, 7: the onset (first event) is 1, the median 4
    assert obj.edges.tolist() == [1.0, 4.0, math.inf]
    assert obj.fitted


def test_unfitted_discrete_objective_refuses_with_a_clear_error():
    obj = SurvivalObjective("pmf", n_bins=3)
    with pytest.raises(ValueError, match="fit_bins"):
        obj.loss(torch.zeros(8, 4), TIME, EVENT)


def test_tied_edges_are_rejected():
    with pytest.raises(ValueError, match="fewer bins"):
        SurvivalObjective("logistic_hazard", n_bins=4).fit_bins(torch.ones(6), torch.ones(6))


@pytest.mark.parametrize("name,fn", [("logistic_hazard", logistic_hazard_nll), ("pmf", pmf_nll), ("deephit", deephit_loss)])
def test_discrete_losses_are_the_discrete_time_functions_on_the_fitted_bins(name, fn):
    obj = SurvivalObjective(name, n_bins=3).fit_bins(TIME, EVENT)
    out = torch.randn(8, obj.n_outputs, generator=torch.Generator().manual_seed(0))
    bins = discretize(TIME, obj.edges)
    torch.testing.assert_close(obj.loss(out, TIME, EVENT), fn(out, bins, EVENT))


def test_cox_loss_and_risk_memory():
    risk = torch.randn(8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(SurvivalObjective("cox", ties="efron").loss(risk, TIME, EVENT),
                               cox_ph_loss(risk, TIME, EVENT, ties="efron"))
    obj, ref = SurvivalObjective("cox", risk_memory=16), CoxRiskMemory(16)
    for half in (slice(0, 4), slice(4, 8)):
        torch.testing.assert_close(obj.loss(risk[half], TIME[half], EVENT[half], training=True),
                                   ref.loss(risk[half], TIME[half], EVENT[half]))
    assert len(obj.memory) == 8
    # evaluation never uses (nor fills) the memory
    torch.testing.assert_close(obj.loss(risk, TIME, EVENT), cox_ph_loss(risk, TIME, EVENT))
    assert len(obj.memory) == 8
    with pytest.raises(ValueError, match="Cox loss only"):
        SurvivalObjective("pmf", risk_memory=8)


def test_hazard_survival_between_bin_ends_median_and_risk_by_hand():
    obj = SurvivalObjective("logistic_hazard", n_bins=2).fit_bins(TIME, EVENT)  # edges 1 (onset), 4, inf
    # hazards 0.5 in bin 0, 0.5 in bin 1 -> S at bin ends 0.5, 0.25; second patient: 0.2, 0.04
    out = torch.logit(torch.tensor([[0.5, 0.5], [0.8, 0.8]]))
    torch.testing.assert_close(obj.survival_at_bin_ends(out), torch.tensor([[0.5, 0.25], [0.2, 0.04]]))
    # 1 until the first training event (t = 1), then linear to S(4); held at S(4) in the open last bin
    s = obj.survival(out, torch.tensor([0.0, 1.0, 2.5, 3.7, 4.0, 100.0]))
    torch.testing.assert_close(s, torch.tensor([[1.0, 1.0, 0.75, 0.55, 0.5, 0.5], [1.0, 1.0, 0.6, 0.28, 0.2, 0.2]]))
    # S reaches 0.5 at t = 4 for the first patient, at 1 + 3 * 0.5 / 0.8 = 2.875 for the second
    torch.testing.assert_close(obj.median(out), torch.tensor([4.0, 2.875]))
    never = torch.logit(torch.tensor([[0.1, 0.1]]))  # S = 0.9, 0.81: never reaches 0.5
    assert obj.median(never).tolist() == [math.inf]
    risk = obj.risk(out)
    assert risk[1] > risk[0]  # higher hazards -> higher risk
    torch.testing.assert_close(risk, torch.tensor([-0.75, -0.24]))


def test_pmf_survival_matches_its_cdf():
    obj = SurvivalObjective("pmf", n_bins=2).fit_bins(TIME, EVENT)
    out = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))  # P(bin 0) 0.2, P(bin 1) 0.3, beyond 0.5
    torch.testing.assert_close(obj.survival_at_bin_ends(out), torch.tensor([[0.8, 0.5]]))
    assert obj.median(out).tolist() == [math.inf]  # S = 0.8 at the last finite edge: not reached within the bins


def test_edges_travel_in_the_state_dict():
    obj = SurvivalObjective("logistic_hazard", n_bins=2).fit_bins(TIME, EVENT)
    fresh = SurvivalObjective("logistic_hazard", n_bins=2)
    fresh.load_state_dict(obj.state_dict())
    assert fresh.fitted and fresh.edges.tolist() == obj.edges.tolist()
