"""Encoder weights files: written by save_encoder_weights / clinfuse pretrain, loaded by model.encoder_weights."""

import json
from pathlib import Path

import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.encoders.strats import STraTSEncoder
from clinfuse.experiments.encoder_weights import load_encoder_weights, save_encoder_weights
from clinfuse.experiments.module import ClinFuseModule

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
STRATS = QUICKSTART.parent / "configs" / "encoders" / "strats.yaml"


@pytest.fixture(scope="module")
def spec(synthetic_cohort):
    return ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "timeseries"]).spec


def _trained_encoder(spec, **kwargs):
    torch.manual_seed(1)
    enc = STraTSEncoder(16, spec["timeseries"], **kwargs)
    with torch.no_grad():  # weights no fresh encoder has
        for p in enc.parameters():
            p.add_(torch.randn_like(p))
    return enc


def test_a_model_starts_from_the_file_and_its_checkpoint_rebuilds_without_it(tmp_path, spec):
    enc = _trained_encoder(spec)
    path = save_encoder_weights(enc, tmp_path / "w" / "ts.pt", "timeseries", spec["timeseries"], {"task": "forecast"})
    torch.manual_seed(2)
    plain = ClinFuseModule(spec=spec, d_model=16, encoders={"timeseries": STraTSEncoder})
    torch.manual_seed(2)
    model = ClinFuseModule(spec=spec, d_model=16, encoders={"timeseries": STraTSEncoder},
                           encoder_weights={"timeseries": str(path)})
    for k, v in enc.state_dict().items():
        assert torch.equal(model.encoders["timeseries"].state_dict()[k], v), k
    assert not torch.equal(plain.encoders["timeseries"].state_dict()["value_cve.net.0.weight"],
                           enc.state_dict()["value_cve.net.0.weight"])
    for k, v in plain.encoders["tabular"].state_dict().items():  # the other encoders as without the file
        assert torch.equal(model.encoders["tabular"].state_dict()[k], v), k
    assert "encoder_weights" not in model.hparams
    # a checkpoint holds its own weights: it rebuilds after the starting file is gone
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": "2.6.0"}, ckpt)
    path.unlink()
    back = ClinFuseModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    assert torch.equal(back.encoders["timeseries"].state_dict()["value_cve.net.0.weight"],
                       enc.state_dict()["value_cve.net.0.weight"])


def test_files_made_for_something_else_are_refused_by_name(tmp_path, spec):
    enc = _trained_encoder(spec)
    path = save_encoder_weights(enc, tmp_path / "ts.pt", "timeseries", spec["timeseries"])
    fresh = STraTSEncoder(16, spec["timeseries"])
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ValueError, match="does not exist"):
        load_encoder_weights(fresh, tmp_path / "nope.pt", "timeseries", spec["timeseries"])
    torch.save(enc.state_dict(), tmp_path / "raw.pt")
    with pytest.raises(ValueError, match="raw.pt is not a clinfuse encoder weights file"):
        load_encoder_weights(fresh, tmp_path / "raw.pt", "timeseries", spec["timeseries"])
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ValueError, match="text.pt is not a readable encoder weights file"):
        load_encoder_weights(fresh, tmp_path / "text.pt", "timeseries", spec["timeseries"])
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # refused: nothing copied
    with pytest.raises(ValueError, match="made for modality 'timeseries'"):
        load_encoder_weights(fresh, path, "ecg", spec["timeseries"])
    from clinfuse.encoders.utde import UTDEEncoder

    with pytest.raises(ValueError, match="STraTSEncoder, the model's timeseries encoder is .*UTDEEncoder"):
        load_encoder_weights(UTDEEncoder(16, spec["timeseries"]), path, "timeseries", spec["timeseries"])
    other = {**spec["timeseries"], "variables": list(reversed(spec["timeseries"]["variables"]))}
    with pytest.raises(ValueError, match=r"another timeseries spec \(differs in \['variables'\]\)"):
        load_encoder_weights(STraTSEncoder(16, other), path, "timeseries", other)
    with pytest.raises(ValueError, match=r"do not fit the model's STraTSEncoder \(\d+ weights differ"):
        load_encoder_weights(STraTSEncoder(16, spec["timeseries"], n_layers=1), path, "timeseries", spec["timeseries"])
    with pytest.raises(ValueError, match=r"names modalities \['ecg'\] that this run does not load"):
        ClinFuseModule(spec=spec, d_model=16, encoder_weights={"ecg": str(path)})


def test_clinfuse_pretrain_learns_to_forecast_and_clinfuse_fit_starts_from_it(tmp_path, synthetic_cohort, capsys):
    from clinfuse.experiments.cli import cli_main
    from clinfuse.experiments.encoder_weights import read_encoder_weights
    from clinfuse.experiments.pretrain import pretrain_main

    base = ["--config", str(QUICKSTART), "--config", str(STRATS), f"--data.root={synthetic_cohort}",
            "--data.modalities=[tabular, timeseries]", "--model.d_model=16"]
    out = pretrain_main([*base, "--epochs", "3", "--no-mlflow", "--out", str(tmp_path / "ts.pt"),
                         f"--trainer.default_root_dir={tmp_path}"])
    info = read_encoder_weights(out)["info"]
    assert info["val_loss_after"] < 0.9 * info["val_loss_before"]  # it learned to forecast
    assert info["unlabelled_patients"] == 0 and info["epochs"] == 3
    fitted = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "timeseries"]).cohort.readers["timeseries"].state_dict()["fitted"]
    assert info["statistics"]["mean"] == pytest.approx(fitted["mean"]) and info["statistics"]["std"] == pytest.approx(fitted["std"])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "--model.encoder_weights" in printed
    cli = cli_main([*base, f"--model.encoder_weights={json.dumps({'timeseries': str(out)})}",
                    "--trainer.logger=false"], run=False)
    saved = read_encoder_weights(out)["state_dict"]
    got = cli.model.encoders["timeseries"].state_dict()
    assert all(torch.equal(got[k], v) for k, v in saved.items())
    with pytest.raises(ValueError, match="--lr must be > 0"):
        pretrain_main([*base, "--lr", "0", "--out", str(tmp_path / "x.pt")])
    with pytest.raises(ValueError, match="no timeseries.parquet"):
        pretrain_main([*base, "--unlabelled", str(tmp_path), "--out", str(tmp_path / "x.pt")])


def test_other_standardisation_statistics_are_named_and_warned_about_at_fit(tmp_path, synthetic_cohort, spec):
    from types import SimpleNamespace

    from clinfuse.experiments.encoder_weights import statistics_shift

    dm = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "timeseries"])
    fitted = dm.cohort.readers["timeseries"].state_dict()["fitted"]
    same = {"mean": list(fitted["mean"]), "std": list(fitted["std"])}
    assert statistics_shift(same, fitted, "w.pt", "timeseries") is None
    assert statistics_shift(None, fitted, "w.pt", "timeseries") is None  # files written without statistics
    other = {"mean": list(same["mean"]), "std": list(same["std"])}
    other["mean"][1] -= 0.5 * other["std"][1]  # this run's mean is 0.5 pretraining sd higher
    other["std"][3] *= 0.4  # this run's sd is 2.5x the pretraining's
    other["mean"][4] += 0.2 * other["std"][4]  # within 0.25 sd: not named
    message = statistics_shift(other, fitted, "w.pt", "timeseries")
    names = fitted["variables"]
    assert f"2 of {len(names)} features" in message and "w.pt (timeseries)" in message
    assert message.index(names[3]) < message.index(names[1])  # the larger difference first
    assert names[4] not in message.split("(2 of")[0]
    # a model starting from such a file warns when it is fitted on this cohort, and not otherwise
    enc = _trained_encoder(spec)
    path = save_encoder_weights(enc, tmp_path / "ts.pt", "timeseries", spec["timeseries"], {"statistics": other})
    model = ClinFuseModule(spec=spec, d_model=16, encoders={"timeseries": STraTSEncoder},
                           encoder_weights={"timeseries": str(path)})
    model._trainer = SimpleNamespace(datamodule=dm)
    with pytest.warns(UserWarning, match=f"pretrained on data standardised with other statistics.*{names[3]} mean"):
        model.setup("fit")
    path = save_encoder_weights(enc, tmp_path / "ts2.pt", "timeseries", spec["timeseries"], {"statistics": same})
    model = ClinFuseModule(spec=spec, d_model=16, encoders={"timeseries": STraTSEncoder},
                           encoder_weights={"timeseries": str(path)})
    model._trainer = SimpleNamespace(datamodule=dm)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.setup("fit")


def test_pretrain_stops_early_keeps_the_best_epoch_and_records_the_run_in_mlflow(tmp_path, synthetic_cohort,
                                                                                monkeypatch, capsys):
    import mlflow

    from clinfuse.experiments.encoder_weights import read_encoder_weights
    from clinfuse.experiments.pretrain import pretrain_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["--config", str(QUICKSTART), "--config", str(STRATS), f"--data.root={synthetic_cohort}",
            "--data.modalities=[tabular, timeseries]", "--model.d_model=16", f"--trainer.default_root_dir={tmp_path}"]
    # lr 0.3 overshoots: the validation loss stops improving and the run stops after `patience` epochs
    out = pretrain_main([*base, "--epochs", "12", "--patience", "1", "--lr", "0.3", "--out", str(tmp_path / "ts.pt")])
    info = read_encoder_weights(out)["info"]
    assert info["epochs_run"] < 12 and info["epochs_run"] == info["best_epoch"] + 2  # best, then 1 epoch without gain
    printed = capsys.readouterr().out
    assert "stopped early" in printed and f"best epoch {info['best_epoch'] + 1}" in printed
    # the written weights are the best epoch's: the validation loss after restoring is the best one seen
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.run_name.startswith("pretrain-forecast-strats-") and run.data.tags["clinfuse.kind"] == "pretrain"
    history = [m.value for m in client.get_metric_history(run.info.run_id, "pretrain/val_loss")]
    assert len(history) == info["epochs_run"]
    assert len(client.get_metric_history(run.info.run_id, "pretrain/train_loss")) == info["epochs_run"]
    assert info["val_loss_after"] == pytest.approx(min(history), rel=1e-5)
    assert run.data.metrics["val_loss_after"] == pytest.approx(info["val_loss_after"])
    assert run.data.params["patience"] == "1" and run.data.params["encoder_class"] == "STraTSEncoder"
    assert [f.path for f in client.list_artifacts(run.info.run_id, "encoder_weights")] == ["encoder_weights/ts.pt"]
    assert f"MLflow run {run.info.run_id}" in printed
    # a fit that starts from the file tags its own run with the file and this pretraining run
    from types import SimpleNamespace

    from clinfuse.experiments.tracking import WorkdirMLFlowLogger, log_run_facts

    spec = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "timeseries"]).spec
    model = ClinFuseModule(spec=spec, d_model=16, encoders={"timeseries": STraTSEncoder},
                           encoder_weights={"timeseries": str(out)})
    logger = WorkdirMLFlowLogger(experiment_name="clinfuse")
    log_run_facts(logger, SimpleNamespace(max_epochs=1, datamodule=None, lightning_module=model))
    tags = client.get_run(logger.run_id).data.tags
    assert tags["clinfuse.encoder_weights.timeseries"] == str(out.resolve())
    assert tags["clinfuse.encoder_weights.timeseries.run_id"] == run.info.run_id
    with pytest.raises(ValueError, match="--patience must be >= 0"):
        pretrain_main([*base, "--patience", "-1", "--out", str(tmp_path / "x.pt")])
