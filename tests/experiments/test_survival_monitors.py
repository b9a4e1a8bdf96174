"""Per-epoch survival metrics are logged each validation epoch and usable as Lightning monitors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

lightning = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from clinfuse.datasets.datamodule import ClinicalDataModule  # noqa: E402
from clinfuse.experiments.module import ClinFuseModule  # noqa: E402
from clinfuse.experiments.survival_metrics import d_calibration, evaluation_times, integrated_brier  # noqa: E402


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


def _val_outputs(dm, model) -> tuple[torch.Tensor, list[str]]:
    """The fitted model's task outputs on the validation split, with the patient ids."""
    model.eval()
    outs, ids = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            outs.append(model(batch["inputs"])[0])
            ids += batch["patient_id"]
    return torch.cat(outs), ids


@pytest.fixture(scope="module")
def discrete_fit(synthetic_cohort, tmp_path_factory):
    return _fit(synthetic_cohort, tmp_path_factory.mktemp("discrete"), survival_loss="pmf", n_time_bins=4)


def test_discrete_model_val_ibs_equals_sksurv_on_its_own_curves(discrete_fit):
    dm, model, trainer, _ = discrete_fit
    out, ids = _val_outputs(dm, model)
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


def test_discrete_model_val_d_calibration_reads_each_patients_own_time(discrete_fit):
    dm, model, trainer, _ = discrete_fit
    out, ids = _val_outputs(dm, model)
    val = dm.cohort.labels.set_index("patient_id").loc[ids]
    time, event = val["time"].to_numpy(float), val["event"].to_numpy(float)
    horizon = float(model.objective.edges[-2])  # after the last finite bin end: censored there
    time, event = np.minimum(time, horizon), np.where(time > horizon, 0.0, event)
    s = model.objective.survival(out, torch.as_tensor(time)).numpy()  # (n, n): column j = time j
    want = d_calibration(np.clip(np.diag(s), 0, 1), event)["p_value"]
    assert float(trainer.callback_metrics["val/d_calibration_p"]) == pytest.approx(want, rel=1e-5)
