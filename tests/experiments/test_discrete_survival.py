"""Discrete-time survival end to end: bins fitted on the train split, checkpoints, prognosis curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

lightning = pytest.importorskip("lightning")

from clinfuse.datasets.datamodule import ClinicalDataModule  # noqa: E402
from clinfuse.experiments import Prognosis  # noqa: E402
from clinfuse.experiments.cohort_records import records_from_cohort  # noqa: E402
from clinfuse.experiments.module import ClinFuseModule  # noqa: E402
from clinfuse.fusion.discrete_time import quantile_bins  # noqa: E402


@pytest.fixture(scope="module")
def trained(synthetic_cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("discrete")
    torch.manual_seed(0)
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "timeseries"], batch_size=32)
    model = ClinFuseModule(spec=dm.spec, d_model=16, survival_loss="logistic_hazard", n_time_bins=4)
    trainer = lightning.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                                enable_model_summary=False, limit_train_batches=3, default_root_dir=tmp)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return dm, model, trainer, ckpt


def test_bins_come_from_the_training_split_and_survive_a_checkpoint(trained):
    dm, model, trainer, ckpt = trained
    train = dm.cohort.labels.set_index("patient_id").loc[dm.cohort.splits["train"]]
    expected = quantile_bins(torch.tensor(train["time"].to_numpy()), torch.tensor(train["event"].to_numpy()), 4)
    torch.testing.assert_close(model.objective.edges, expected.float())
    loaded = ClinFuseModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    torch.testing.assert_close(loaded.objective.edges, model.objective.edges)
    assert "val/c_index" in trainer.callback_metrics  # the risk proxy feeds the usual metrics


def test_head_outputs_one_logit_per_bin_and_risk_is_their_summary(trained):
    dm, model, _, _ = trained
    batch = next(iter(dm.test_dataloader()))
    model.eval()
    with torch.no_grad():
        out, _ = model(batch["inputs"])
    assert out.shape == (len(batch["patient_id"]), 4)
    surv = torch.exp(torch.cumsum(torch.nn.functional.logsigmoid(-out), 1))
    torch.testing.assert_close(model.risk(out), -surv.sum(1))


def test_prognosis_reads_survival_from_the_bins(trained, synthetic_cohort):
    dm, model, _, ckpt = trained
    prog = Prognosis.from_training(ckpt, dm)
    assert prog.baseline is None  # no Breslow baseline for a discrete-time model
    records = records_from_cohort(synthetic_cohort, dm.cohort.splits["test"])
    rec = next(r for r in records if "tabular" in r and "timeseries" in r)
    rec = {k: v for k, v in rec.items() if k in ("patient_id", "tabular", "timeseries")}
    [res] = prog.predict([rec], horizons=(0.0, 1e9))
    edges = model.objective.edges
    assert res["survival_curve"]["times"] == pytest.approx(edges[1:-1].tolist())
    curve = np.array(res["survival_curve"]["survival"])
    assert curve.shape == (3,) and np.all(np.diff(curve) <= 0) and np.all((curve > 0) & (curve < 1))
    assert res["survival_at"][0.0] == 1.0
    assert res["survival_at"][1e9] == pytest.approx(curve[-1])  # held at the last finite edge
    mid = float(edges[1] + edges[2]) / 2  # halfway through bin 1: halfway between its end values
    [res_mid] = prog.predict([rec], horizons=(mid,))
    assert res_mid["survival_at"][mid] == pytest.approx((curve[0] + curve[1]) / 2, abs=1e-6)
    median = res["median_survival"]
    if curve[-1] > 0.5:
        assert math.isinf(median)
    else:  # S(median) = 0.5 on the curve read between the bin ends
        [at] = prog.predict([rec], horizons=(median,))
        assert 0 < median <= float(edges[-2]) and at["survival_at"][median] == pytest.approx(0.5, abs=1e-5)
    # the contribution of a modality is the change of the risk score when it is removed
    [alone] = prog.predict([{k: v for k, v in rec.items() if k != "timeseries"}])
    assert res["contributions"]["timeseries"] == pytest.approx(res["risk"] - alone["risk"], abs=1e-5)
