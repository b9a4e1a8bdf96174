"""The per-epoch survival monitors read the right outputs: ClinFuseModule's val-epoch helpers
against independent references (a Breslow baseline of the TRAIN outputs, sksurv's C per cause,
D-calibration at each patient's own time)."""

from __future__ import annotations

import lightning
import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.survival_curves import BreslowBaseline
from clinfuse.experiments.survival_metrics import d_calibration

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


def test_discrete_model_val_d_calibration_reads_each_patients_own_time(synthetic_cohort, tmp_path):
    torch.manual_seed(0)
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics"], batch_size=32)
    model = ClinFuseModule(spec=dm.spec, d_model=16, survival_loss="pmf", n_time_bins=4)
    trainer = lightning.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    model.eval()
    outs, ids = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            outs.append(model(batch["inputs"])[0])
            ids += batch["patient_id"]
    val = dm.cohort.labels.set_index("patient_id").loc[ids]
    time, event = val["time"].to_numpy(float), val["event"].to_numpy(float)
    horizon = float(model.objective.edges[-2])  # after the last finite bin end: censored there
    time, event = np.minimum(time, horizon), np.where(time > horizon, 0.0, event)
    s = model.objective.survival(torch.cat(outs), torch.as_tensor(time)).numpy()  # (n, n): column j = time j
    want = d_calibration(np.clip(np.diag(s), 0, 1), event)["p_value"]
    assert float(trainer.callback_metrics["val/d_calibration_p"]) == pytest.approx(want, rel=1e-5)
