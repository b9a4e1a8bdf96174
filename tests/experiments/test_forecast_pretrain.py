"""Self-supervised forecasting pretraining of time-series encoders (STraTS's objective)."""

import lightning.pytorch as pl
import pytest
import torch

from clinfuse.encoders.strats import STraTSEncoder
from clinfuse.encoders.tabular import TabularMLPEncoder
from clinfuse.experiments.forecast_pretrain import ForecastPretrainModule, forecast_targets


def _one_patient():
    # times 1, 2, 5, 5.5, 9 h; the last slot is padding with garbage in it
    return {
        "times": torch.tensor([[1.0, 2.0, 5.0, 5.5, 9.0, 4.5]]),
        "variables": torch.tensor([[0, 1, 0, 0, 1, 1]]),
        "values": torch.tensor([[1.0, 2.0, 3.0, 5.0, 7.0, 100.0]]),
        "mask": torch.tensor([[True, True, True, True, True, False]]),
        "present": torch.tensor([True]),
    }


def test_targets_are_the_window_means_and_the_inputs_stop_at_the_cutoff():
    enc_in, target, seen = forecast_targets(_one_patient(), torch.tensor([4.0]), window=2.0, n_variables=3)
    assert enc_in["mask"].tolist() == [[True, True, False, False, False, False]]
    assert enc_in["present"].tolist() == [True]
    assert target.tolist() == [[4.0, 0.0, 0.0]]  # variable 0: (3 + 5) / 2 in [4, 6); 1 only at 9 h and in padding
    assert seen.tolist() == [[True, False, False]]
    enc_in, _, seen = forecast_targets(_one_patient(), torch.tensor([0.5]), window=2.0, n_variables=3)
    assert not enc_in["present"].any() and seen.tolist() == [[True, True, False]]


def test_a_patient_with_nothing_before_the_cutoff_adds_no_loss():
    enc = STraTSEncoder(16, STraTSEncoder.example_spec())
    pre = ForecastPretrainModule(enc)
    inputs = _one_patient()
    inputs["variables"] = inputs["variables"].clamp(max=enc.n_variables - 1)
    loss = pre.loss(inputs, torch.tensor([0.5]))
    assert loss.item() == 0.0
    loss = pre.loss(inputs, torch.tensor([4.0]))
    assert loss.item() > 0 and torch.isfinite(loss)
    loss.backward()
    assert enc.value_cve.net[0].weight.grad is not None and enc.value_cve.net[0].weight.grad.abs().sum() > 0


def test_cutoffs_lie_between_each_patients_first_and_last_observation():
    pre = ForecastPretrainModule(STraTSEncoder(16, STraTSEncoder.example_spec()))
    inputs = STraTSEncoder.example_inputs(batch_size=4)
    torch.manual_seed(0)
    cut = torch.stack([pre.draw_cutoffs(inputs) for _ in range(50)])  # (50, B)
    valid = inputs["mask"].bool() & inputs["present"][:, None]
    for i in range(4):
        if valid[i].any():
            t = inputs["times"][i][valid[i]]
            assert (cut[:, i] >= t.min()).all() and (cut[:, i] <= t.max()).all()
        else:
            assert (cut[:, i] == 0).all()


def test_pretraining_on_a_cohort_lowers_the_forecast_error_of_the_encoder_in_place(synthetic_cohort):
    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.experiments.module import ClinFuseModule

    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["timeseries"], batch_size=32)
    dm.setup("fit")
    pl.seed_everything(0, verbose=False)
    model = ClinFuseModule(spec=dm.spec, d_model=32, encoders={"timeseries": STraTSEncoder}, task="survival")
    pre = ForecastPretrainModule(model.encoders["timeseries"], forecast_hours=4.0, lr=3e-3)
    batch = next(iter(dm.val_dataloader()))["inputs"]["timeseries"]
    torch.manual_seed(1)
    cutoffs = pre.draw_cutoffs(batch)

    def val_loss() -> float:
        pre.eval()
        with torch.no_grad():
            return pre.loss(batch, cutoffs).item()

    before = val_loss()
    pre.train()
    pl.Trainer(max_epochs=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(pre, datamodule=dm)
    after = val_loss()
    assert after < 0.8 * before, (before, after)
    assert pre.encoder is model.encoders["timeseries"]  # the model fine-tunes what was pretrained


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="needs a time-series encoder.*TabularMLPEncoder"):
        ForecastPretrainModule(TabularMLPEncoder(16, TabularMLPEncoder.example_spec()))
    with pytest.raises(ValueError, match="forecast_hours must be > 0"):
        ForecastPretrainModule(STraTSEncoder(16, STraTSEncoder.example_spec()), forecast_hours=0)
    pre = ForecastPretrainModule(STraTSEncoder(16, STraTSEncoder.example_spec()))
    with pytest.raises(ValueError, match=r"holds no time series \(modalities \['tabular'\]\)"):
        pre.training_step({"inputs": {"tabular": {}}}, 0)


def test_validation_cutoffs_are_the_same_every_epoch_and_leave_the_training_stream_alone():
    enc = STraTSEncoder(16, STraTSEncoder.example_spec())
    pre = ForecastPretrainModule(enc, val_seed=3).eval()  # as Lightning validates: no dropout draws
    inputs = STraTSEncoder.example_inputs(batch_size=4)
    batch = {"inputs": {"timeseries": inputs}}
    losses = []
    for _ in range(2):
        torch.manual_seed(len(losses))  # a different global stream each time
        pre.on_validation_epoch_start()
        state = torch.get_rng_state()
        with torch.no_grad():
            losses.append(pre.loss(inputs, pre.draw_cutoffs(inputs, pre._val_generator)).item())
            pre.validation_step(batch, 0)
        assert torch.equal(torch.get_rng_state(), state)  # validation drew nothing from the global stream
        pre.on_validation_epoch_end()
    assert losses[0] == losses[1]
    assert pre._val_generator is None  # training draws from the global stream again
    torch.manual_seed(0)
    a = pre.draw_cutoffs(inputs)
    torch.manual_seed(0)
    assert torch.equal(a, pre.draw_cutoffs(inputs))
