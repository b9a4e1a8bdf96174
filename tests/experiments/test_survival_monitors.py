"""Per-epoch survival metrics are logged each validation epoch and usable as Lightning monitors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

lightning = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from clinfuse.datasets.datamodule import ClinicalDataModule  # noqa: E402
from clinfuse.experiments.module import ClinFuseModule  # noqa: E402
from clinfuse.experiments.survival_metrics import evaluation_times, integrated_brier  # noqa: E402


class _History(lightning.Callback):
    def __init__(self) -> None:
        self.ibs: list[float] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        self.ibs.append(float(trainer.callback_metrics["val/ibs"]))


def _fit(root, tmp_path, **model_kwargs):
    torch.manual_seed(0)
    dm = ClinicalDataModule(str(root), modalities=["tabular", "genomics"], batch_size=32)
    model = ClinFuseModule(spec=dm.spec, d_model=16, **model_kwargs)
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/ibs", mode="min", filename="best-{epoch}")
    trainer = lightning.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                                callbacks=[history := _History(), ckpt], num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    trainer.history = history.ibs
    return dm, model, trainer, ckpt


def test_cox_model_logs_curve_metrics_and_checkpoints_on_ibs(synthetic_cohort, tmp_path):
    _, _, trainer, ckpt = _fit(synthetic_cohort, tmp_path)
    m = trainer.callback_metrics
    for key in ("val/c_index", "val/uno_c_index", "val/td_auc", "val/ibs", "val/d_calibration_p"):
        assert key in m and np.isfinite(float(m[key])), key
    assert 0.0 < float(m["val/ibs"]) < 0.5
    assert 0.0 <= float(m["val/d_calibration_p"]) <= 1.0
    assert len(trainer.history) == 2
    assert ckpt.best_model_path and float(ckpt.best_model_score) == pytest.approx(min(trainer.history))


def test_discrete_model_val_ibs_equals_sksurv_on_its_own_curves(synthetic_cohort, tmp_path):
    dm, model, trainer, _ = _fit(synthetic_cohort, tmp_path, survival_loss="pmf", n_time_bins=4)
    model.eval()
    outs, ids = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            outs.append(model(batch["inputs"])[0])
            ids += batch["patient_id"]
    out = torch.cat(outs)
    labels = dm.cohort.labels.set_index("patient_id")
    val, tr = labels.loc[ids], labels.loc[dm.cohort.splits["train"]]
    train = (tr["time"].to_numpy(float), tr["event"].to_numpy(float))
    test = (val["time"].to_numpy(float), val["event"].to_numpy(float))
    times = evaluation_times(*train, *test)
    times = times[times <= float(model.objective.edges[-2])]  # the curve is only held flat after the last bin end
    assert len(times) >= 2
    surv = model.objective.survival(out, torch.as_tensor(times)).numpy()
    expected = integrated_brier(train, test, surv, times)
    assert float(trainer.callback_metrics["val/ibs"]) == pytest.approx(expected, rel=1e-5)
