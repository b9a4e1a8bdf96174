"""The LightningModule names the missing label when a cohort lacks its task's labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.cohort import Cohort
from clinfuse.datasets.dataset import ClinicalDataset, Collator
from clinfuse.experiments.module import ClinFuseModule


def _binary_only_batch(tmp_path):
    ids = [f"p{i}" for i in range(6)]
    root = tmp_path / "c"
    root.mkdir()
    pd.DataFrame({"patient_id": ids, "binary": [0, 1] * 3}).to_parquet(root / "labels.parquet", index=False)
    pd.DataFrame({"patient_id": ids, "split": ["train"] * 4 + ["val", "test"]}).to_csv(root / "splits.csv", index=False)
    pd.DataFrame({"patient_id": ids, "age": np.arange(6.0)}).to_parquet(root / "tabular.parquet", index=False)
    cohort = Cohort.load(root).fit()
    ds = ClinicalDataset(cohort, "train")
    return cohort, Collator(cohort.readers)([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("task, match", [("survival", r"'survival' needs label\(s\) 'time' and 'event'.*\['binary'\]"),
                                         ("multiclass", r"'multiclass' needs label\(s\) 'multiclass'.*\['binary'\]")])
def test_missing_task_label_is_named(tmp_path, task, match):
    cohort, batch = _binary_only_batch(tmp_path)
    model = ClinFuseModule(spec=cohort.spec(), d_model=8, task=task, n_classes=3)
    with pytest.raises(ValueError, match=match):
        model.training_step(batch, 0)


def test_binary_task_trains_on_binary_only_cohort(tmp_path):
    cohort, batch = _binary_only_batch(tmp_path)
    model = ClinFuseModule(spec=cohort.spec(), d_model=8, task="binary")
    out, _ = model(batch["inputs"])
    loss = model.loss(out, batch["labels"])
    ref = torch.nn.functional.binary_cross_entropy(torch.sigmoid(out), batch["labels"]["binary"])
    assert torch.isfinite(loss) and torch.allclose(loss, ref, atol=1e-6)


def test_fitting_on_a_data_module_without_one_of_the_models_modalities_is_refused(synthetic_cohort, tmp_path):
    import lightning

    from clinfuse.datasets.datamodule import ClinicalDataModule

    spec = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics"]).spec
    model = ClinFuseModule(spec=spec, d_model=16)
    def trainer():
        return lightning.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)

    with pytest.raises(ValueError, match=r"built for modalities \['genomics', 'tabular'\], the data module serves "
                                         r"\['tabular'\] \(lacking \['genomics'\], extra \[\]\)"):
        trainer().fit(model, datamodule=ClinicalDataModule(str(synthetic_cohort), modalities=["tabular"], batch_size=32))
    genomics = {k: v.clone() for k, v in model.encoders["genomics"].state_dict().items()}
    trainer().fit(model, datamodule=ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics"], batch_size=32))
    assert any(not torch.equal(v, genomics[k]) for k, v in model.encoders["genomics"].state_dict().items())


def test_fusion_and_encoders_by_name_and_built_modules_refused():
    from clinfuse.encoders.ft_tabular import FTTransformerEncoder
    from clinfuse.encoders.tabular import TabularMLPEncoder
    from clinfuse.fusion.masked_mean import MaskedMeanFusion

    spec = {"tabular": TabularMLPEncoder.example_spec()}
    model = ClinFuseModule(spec=spec, d_model=16, fusion="masked_mean", encoders={"tabular": "FTTransformerEncoder"})
    assert isinstance(model.fusion, MaskedMeanFusion) and isinstance(model.encoders["tabular"], FTTransformerEncoder)
    with pytest.raises(ValueError, match=r"fusion='maskedmean': no such fusion head; known: \['cascaded'"):
        ClinFuseModule(spec=spec, fusion="maskedmean")
    with pytest.raises(TypeError, match="fusion: pass the fusion head class .* not a built MaskedMeanFusion"):
        ClinFuseModule(spec=spec, d_model=16, fusion=MaskedMeanFusion(16, ["tabular"]))
    with pytest.raises(TypeError, match=r"encoders\['tabular'\]: pass the encoder class .* not a built TabularMLPEncoder"):
        ClinFuseModule(spec=spec, d_model=16, encoders={"tabular": TabularMLPEncoder(16, spec["tabular"])})


@pytest.mark.parametrize("kwargs, match", [({"lr": 0.0}, "lr must be > 0"), ({"lr": -1e-3}, "lr must be > 0"),
                                           ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
                                           ({"step_loss_weight": -1.0}, "step_loss_weight must be >= 0"),
                                           ({"head_dropout": 1.0}, r"head_dropout must be in \[0, 1\)")])
def test_optimisation_arguments_out_of_range_are_refused(kwargs, match):
    from clinfuse.encoders.tabular import TabularMLPEncoder

    with pytest.raises(ValueError, match=match):
        ClinFuseModule(spec={"tabular": TabularMLPEncoder.example_spec()}, d_model=16, **kwargs)


@pytest.mark.parametrize("kwargs, match", [({"max_patches": 2.5}, "max_patches must be a whole number >= 1, got 2.5"),
                                           ({"num_workers": 1.5}, "num_workers must be a whole number >= 0"),
                                           ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0")])
def test_data_module_whole_number_arguments(kwargs, match):
    from clinfuse.datasets.datamodule import ClinicalDataModule

    with pytest.raises(ValueError, match=match):
        ClinicalDataModule("anywhere", **kwargs)
