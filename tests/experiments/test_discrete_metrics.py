"""A discrete-time model whose survival is right at every bin end must pass the curve metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.experiments.survival_metrics import survival_report
from clinfuse.fusion.survival_objective import SurvivalObjective


def _cohort(rng, n):
    lam = 0.01 * np.exp(0.8 * rng.standard_normal(n))  # exponential event times, covariate-driven
    t_event, censor = rng.exponential(1 / lam), rng.exponential(150, n)
    return lam, np.minimum(t_event, censor), (t_event <= censor).astype(float)


@pytest.mark.parametrize("n_bins", [4, 8])
def test_a_model_right_at_every_bin_end_is_calibrated_and_scores_the_true_curves_brier(n_bins):
    rng = np.random.default_rng(1)
    _, t_tr, e_tr = _cohort(rng, 2000)
    lam, t_te, e_te = _cohort(rng, 1000)
    obj = SurvivalObjective("logistic_hazard", n_bins=n_bins).fit_bins(torch.tensor(t_tr), torch.tensor(e_tr))
    edges = obj.edges.numpy()

    def true_surv(times):
        return np.exp(-lam[:, None] * np.asarray(times, float)[None, :])

    at_ends = np.concatenate([np.ones((len(lam), 1)), true_surv(edges[1:-1])], 1)  # S at e_0..e_{K-1}
    hazard = 1 - np.concatenate([at_ends[:, 1:], np.zeros((len(lam), 1))], 1) / at_ends  # (n, K)
    logits = torch.logit(torch.tensor(hazard).clamp(1e-12, 1 - 1e-12))
    np.testing.assert_allclose(obj.survival_at_bin_ends(logits).numpy()[:, :-1], at_ends[:, 1:], atol=1e-6)

    def model_surv(times):
        return obj.survival(logits, torch.as_tensor(np.asarray(times, float))).numpy()

    horizon = float(edges[-2])
    kw = dict(n_boot=1, curve_auc=True, model_horizon=horizon)
    got = survival_report(t_tr, e_tr, t_te, e_te, obj.risk(logits).numpy(), model_surv, **kw)
    truth = survival_report(t_tr, e_tr, t_te, e_te, -lam, true_surv, **kw)
    assert got["d_calibration_p"] > 0.2
    assert got["ibs"] == pytest.approx(truth["ibs"], abs=0.002)
    assert got["mean_td_auc"] == pytest.approx(truth["mean_td_auc"], abs=0.005)
    # past the last finite bin end the model's curve is only held flat: scored there (no horizon),
    # the same perfect model is rejected when its last bin is wide
    if n_bins == 4:
        flat = survival_report(t_tr, e_tr, t_te, e_te, obj.risk(logits).numpy(), model_surv, n_boot=1)
        assert flat["d_calibration_p"] < 1e-3
