"""A fit resumed from a checkpoint continues the random streams: it equals the uninterrupted fit."""

from __future__ import annotations

import lightning
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments import rng_state
from clinfuse.experiments.module import ClinFuseModule


def _fit(root, work, epochs, ckpt=None):
    lightning.seed_everything(0, verbose=False)
    dm = ClinicalDataModule(str(root), modalities=["tabular", "wsi"], batch_size=32, max_patches=8)
    model = ClinFuseModule(spec=dm.spec, d_model=16, modality_dropout=0.3)
    losses = []

    class Record(lightning.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # noqa: ANN001 - Lightning hook
            losses.append(float(trainer.callback_metrics["train/loss"]))

    trainer = lightning.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False, limit_val_batches=0, callbacks=[Record()],
                                default_root_dir=work)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return trainer, model, losses


def test_a_resumed_fit_equals_the_uninterrupted_one(synthetic_cohort, tmp_path):
    # shuffling, modality dropout and random slide patches all draw random numbers every epoch
    _, full, full_losses = _fit(synthetic_cohort, tmp_path / "a", 3)
    first, _, first_losses = _fit(synthetic_cohort, tmp_path / "b", 1)
    first.save_checkpoint(tmp_path / "epoch1.ckpt")
    _, resumed, resumed_losses = _fit(synthetic_cohort, tmp_path / "c", 3, ckpt=tmp_path / "epoch1.ckpt")
    assert first_losses + resumed_losses == full_losses
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_loading_a_model_for_prediction_leaves_the_callers_generators_alone(tmp_path):
    torch.manual_seed(1)
    saved = rng_state.capture()
    model = ClinFuseModule(spec=_spec(), d_model=8)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": lightning.__version__, "clinfuse_rng": saved}, tmp_path / "m.ckpt")
    torch.manual_seed(2)
    ClinFuseModule(spec=_spec(), d_model=8)  # building the model draws its initial weights
    expected = torch.get_rng_state()
    torch.manual_seed(2)
    ClinFuseModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=False)
    assert torch.equal(torch.get_rng_state(), expected) and not torch.equal(expected, saved["torch"])


def _spec():
    from clinfuse.encoders.tabular import TabularMLPEncoder

    return {"tabular": TabularMLPEncoder.example_spec()}
