"""The predictor's and the after-fit report's Breslow baseline come from the TRAINING split, and
``survival_at`` is keyed by horizon whatever order the horizons come in."""

from __future__ import annotations

import lightning
import numpy as np
import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.cohort_records import records_from_cohort
from clinfuse.experiments.module import ClinFuseModule
from clinfuse.experiments.prognosis import Prognosis
from clinfuse.experiments.survival_curves import BreslowBaseline
from clinfuse.experiments.survival_metrics import survival_report
from clinfuse.experiments.survival_report import predict_split, survival_figures


def _train(root, tmp_path):  # as tests/experiments/test_prognosis.py: a Cox model
    torch.manual_seed(0)
    dm = ClinicalDataModule(str(root), batch_size=32, max_patches=32)
    model = ClinFuseModule(spec=dm.spec, d_model=16)
    trainer = lightning.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                                enable_model_summary=False, limit_train_batches=2, limit_val_batches=0,
                                default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return dm, Prognosis.from_training(ckpt, dm)


def raw_record(root, pid):
    return records_from_cohort(root, [pid])[0]


@pytest.fixture(scope="module")
def trained(synthetic_cohort, tmp_path_factory):
    return _train(synthetic_cohort, tmp_path_factory.mktemp("audit"))


def _train_baseline(dm, model):
    ids, risk = predict_split(model, dm, "train")
    lab = dm.cohort.labels.set_index("patient_id").loc[ids]
    return BreslowBaseline().fit(risk, lab["time"].to_numpy(float), lab["event"].to_numpy(float))


def test_predictor_baseline_is_fitted_on_the_training_split(trained):
    dm, prog = trained
    ref = _train_baseline(dm, prog.model)
    np.testing.assert_allclose(prog.baseline.event_times, ref.event_times, rtol=1e-6)
    np.testing.assert_allclose(prog.baseline.cum_hazard, ref.cum_hazard, rtol=1e-5)


def test_survival_at_is_keyed_by_horizon_whatever_their_order(trained, synthetic_cohort):
    dm, prog = trained
    recs = [raw_record(synthetic_cohort, pid) for pid in list(dm.cohort.splits["test"])[:4]]
    a = prog.predict(recs, horizons=(365, 30, 90), contributions=False)
    b = prog.predict(recs, horizons=(30, 90, 365), contributions=False)
    for pa, pb in zip(a, b):
        for h in (30, 90, 365):
            assert pa["survival_at"][h] == pytest.approx(pb["survival_at"][h], rel=1e-12)
        assert pa["survival_at"][30] >= pa["survival_at"][90] >= pa["survival_at"][365]


def test_survival_figures_baseline_and_report_use_the_training_split(trained, tmp_path):
    dm, prog = trained
    res = survival_figures(prog.model, dm, tmp_path, n_boot=5)
    ref = _train_baseline(dm, prog.model)
    np.testing.assert_allclose(res["baseline"].cum_hazard, ref.cum_hazard, rtol=1e-6)
    te_ids, te_risk = predict_split(prog.model, dm, "test")
    lab = dm.cohort.labels.set_index("patient_id")
    te, tr = lab.loc[te_ids], lab.loc[list(dm.cohort.splits["train"])]
    want = survival_report(tr["time"].to_numpy(float), tr["event"].to_numpy(float), te["time"].to_numpy(float),
                           te["event"].to_numpy(float), te_risk, lambda t: ref.survival(te_risk, t), n_boot=5,
                           model_horizon=float(ref.event_times[-1]))
    for k in ("uno", "mean_td_auc", "ibs", "d_calibration_p"):
        assert res["report"][k] == pytest.approx(want[k], rel=1e-6), k
