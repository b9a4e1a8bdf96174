"""The Cox risk memory of a ClinFuseModule holds the current epoch's earlier batches only."""

from __future__ import annotations

import lightning

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.module import ClinFuseModule


def test_risk_memory_is_emptied_at_each_epoch_so_no_patient_is_in_it_twice(synthetic_cohort, tmp_path):
    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular"], batch_size=16)
    model = ClinFuseModule(spec=dm.spec, d_model=8, risk_memory=4096)  # larger than the training split
    sizes = []

    class Record(lightning.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # noqa: ANN001 - Lightning hook
            sizes.append(len(pl_module.objective.memory))

    lightning.Trainer(max_epochs=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                      default_root_dir=tmp_path).fit(model, datamodule=dm)
    n_train = len(dm.cohort.splits["train"])
    assert sizes == [n_train] * 3  # without the reset: n_train, 2 n_train, 3 n_train
