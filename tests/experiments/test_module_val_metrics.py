"""The per-epoch survival monitors read the right outputs: ClinFuseModule's val-epoch helpers
against independent references (a Breslow baseline of the TRAIN outputs, sksurv's C per cause;
D-calibration at each patient's own time is in test_survival_monitors.py)."""

from __future__ import annotations

import numpy as np
import torch
from sksurv.metrics import concordance_index_censored

from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.survival_curves import BreslowBaseline

SPEC = {"tabular": {"numeric_features": ["a"], "categorical_features": [], "categorical_cardinalities": []}}


def _fill(model, stage, **arrays):
    for k, v in arrays.items():
        model._collected[f"{stage}_preds"][k].update(torch.as_tensor(v, dtype=torch.float32))


def test_val_survival_function_uses_a_breslow_baseline_of_the_train_outputs():
    model = ClinFuseModule(spec=SPEC, d_model=8)
    rng = np.random.default_rng(0)
    tr_out, tr_t, tr_e = rng.normal(size=40), rng.uniform(1, 100, 40).round(), rng.integers(0, 2, 40)
    va_out, va_t, va_e = rng.normal(size=15), rng.uniform(1, 100, 15).round(), rng.integers(0, 2, 15)
    _fill(model, "train", out=tr_out, time=tr_t, event=tr_e)
    _fill(model, "val", out=va_out, time=va_t, event=va_e)
    fn = model._survival_function("val", va_out)
    grid = np.array([5.0, 20.0, 50.0, 90.0])
    ref = BreslowBaseline().fit(tr_out.astype(np.float32), tr_t, tr_e).survival(va_out, grid)
    np.testing.assert_allclose(fn(grid), ref, rtol=1e-5)


def test_cause_specific_c_counts_only_that_cause():
    model = ClinFuseModule(spec=SPEC, d_model=8, survival_loss="pmf_cr", n_time_bins=3, n_causes=2)
    rng = np.random.default_rng(1)
    n = 30
    raw = rng.normal(size=(n, model.objective.n_outputs))
    time, cause = rng.uniform(1, 100, n), rng.integers(0, 3, n)
    _fill(model, "val", raw=raw.reshape(-1), cause=cause)
    got = model._cause_c_indices("val", time)
    cif = model.objective.cumulative_incidence(torch.as_tensor(raw, dtype=torch.float32)).sum(-1).numpy()
    for r in (1, 2):
        assert got[f"c_index_cause{r}"] == concordance_index_censored(cause == r, time, cif[:, r - 1])[0]
