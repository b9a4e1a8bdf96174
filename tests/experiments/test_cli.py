"""The `clinfuse fit` path end to end: training, MLflow records, oracle report, config smoke tests."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.cli import cli_main
from clinfuse.experiments.predictions_table import predictions_frame
from clinfuse.experiments.module import ClinFuseModule

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
# every fit config; sweep files are not fit configs (tests/experiments/test_sweep.py runs each one)
CONFIGS = sorted(p for p in (REPO / "experiments").rglob("*.yaml") if "sweeps" not in p.parts)


def _base(cohort: Path, *configs: Path) -> list[str]:
    """The quickstart config, more configs stacked on it, then overrides pointing at the test cohort."""
    stack = [QUICKSTART, *(c for c in configs if c != QUICKSTART)]
    return [*(a for c in stack for a in ("--config", str(c))), "--data.root", str(cohort),
            "--data.synth_if_missing=false", "--data.batch_size=32", "--data.max_patches=32"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "experiments")))
def test_every_config_runs_one_batch(config, synthetic_cohort, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a competing-risks config needs the 'cause' label: the same cohort with causes added
    cohort = request.getfixturevalue("competing_cohort") if "competing" in config.name else synthetic_cohort
    cli = cli_main(["fit", *_base(cohort, config), "--trainer.fast_dev_run=1", "--trainer.logger=false"])
    assert cli.trainer.state.finished
    assert cli.datamodule.root == str(cohort)  # the test cohort, not a freshly generated one


def test_fit_trains_tests_and_records_everything_in_mlflow(synthetic_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cli = cli_main(["fit", *_base(synthetic_cohort), "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    out = capsys.readouterr().out
    assert "model vs oracle" in out and "c_index" in out

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("clinfuse")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.params["task"] == "survival" and run.data.params["d_model"] == "64"
    splits = pd.read_csv(synthetic_cohort / "splits.csv")["split"].value_counts()
    assert run.data.params["data.n_test"] == str(splits["test"]) and run.data.params["trainer.max_epochs"] == "2"
    assert run.data.params["data.loaded_modalities"] == "tabular,timeseries,ecg,notes,wsi,genomics"
    assert len(client.get_metric_history(run.info.run_id, "val/task_loss")) == 2
    history = client.get_metric_history(run.info.run_id, "val/c_index")
    assert len(history) == 2  # one value per epoch
    assert 0.0 <= run.data.metrics["test/c_index"] <= 1.0
    assert 0.0 <= run.data.metrics["test/uno_c_index"] <= 1.0 and 0.0 <= run.data.metrics["test/td_auc"] <= 1.0
    assert len(client.get_metric_history(run.info.run_id, "val/uno_c_index")) == 2
    assert 0.5 < run.data.metrics["oracle/c_index_full"] <= 1.0
    artifacts = _all_artifacts(client, run.info.run_id)
    assert "config.yaml" in artifacts
    assert any(a.endswith(".ckpt") for a in artifacts), artifacts
    assert {"figures/km_risk_groups.png", "figures/calibration.png"} <= set(artifacts)
    local = Path(cli.trainer.default_root_dir) / "figures" / run.info.run_id  # one folder per run, named by it
    assert (local / "km_risk_groups.png").exists() and f"figures in {local}" in out
    assert 0.0 <= run.data.metrics["test/logrank_p"] <= 1.0
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text()
    assert str(synthetic_cohort) in config_text and "TransformerFusion" in config_text
    assert str(tmp_path) not in config_text  # no store path: a re-run elsewhere logs where it runs
    assert run.data.params["data.root_resolved"] == str(synthetic_cohort.resolve())
    import subprocess

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a git checkout (CI's clone is one): the run names the code it ran
        assert run.data.tags["mlflow.source.git.commit"].removesuffix("-dirty") == head
    # the prediction model (pyfunc), registered in the model registry and loaded back from it
    uri = run.data.tags["clinfuse.prognosis_model_uri"]
    assert f"prediction model logged: {uri}" in out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        version = mlflow.register_model(uri, "clinfuse-quickstart")
        from clinfuse.experiments import Prognosis
        from clinfuse.experiments.cohort_records import records_from_cohort

        prog = Prognosis.load(f"models:/clinfuse-quickstart/{version.version}")
        record = records_from_cohort(synthetic_cohort, [next(iter(cli.datamodule.cohort.splits["test"]))])[0]
        (pred,) = prog.predict([record])
        assert math.isfinite(pred["risk"]) and pred["modalities_used"]
        # the registered model is the best checkpoint the CLI tested
        best = Prognosis.from_training(cli.trainer.checkpoint_callback.best_model_path, cli.datamodule)
        assert best.predict([record])[0]["risk"] == pytest.approx(pred["risk"], rel=1e-5)
    finally:
        mlflow.set_tracking_uri(None)

    # the best checkpoint rebuilds the whole model (encoders + head) and predicts identically
    best = cli.trainer.checkpoint_callback.best_model_path
    model = ClinFuseModule.load_from_checkpoint(best).eval()
    batch = next(iter(cli.datamodule.test_dataloader()))
    cli.model.eval()  # trainer.test(ckpt_path="best") loaded the best weights into cli.model
    with torch.no_grad():
        a, _ = model(batch["inputs"])
        b, _ = cli.model(batch["inputs"])
    assert torch.allclose(a, b) and torch.isfinite(a).all()


def _all_artifacts(client, run_id, path=None) -> list[str]:
    found = []
    for f in client.list_artifacts(run_id, path):
        found.extend(_all_artifacts(client, run_id, f.path) if f.is_dir else [f.path])
    return found


def test_missing_data_folder_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="clinfuse synth"):
        cli_main(["fit", "--config", str(QUICKSTART), "--data.root", str(tmp_path / "nowhere"),
                  "--data.synth_if_missing=false", "--trainer.logger=false"])


def test_config_naming_a_modality_the_data_lacks_fails_before_training(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", *_base(synthetic_cohort), "--data.modalities=[tabular, genomics]", "--trainer.logger=false",
            "--model.encoders", '{"ecg": {"class_path": "clinfuse.encoders.ECGConvEncoder"}}']
    with pytest.raises(ValueError, match="ecg"):
        cli_main(args)


def test_patient_with_no_modality_gets_a_finite_prediction(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main([*_base(synthetic_cohort), "--trainer.logger=false"], run=False)
    batch = next(iter(_setup(cli.datamodule).test_dataloader()))
    for inputs in batch["inputs"].values():  # every patient loses every modality
        inputs["present"] = torch.zeros_like(inputs["present"])
    cli.model.eval()
    with torch.no_grad():
        out, fused = cli.model(batch["inputs"])
    assert torch.isfinite(out).all() and torch.isfinite(fused.pooled).all()
    # and they all get the same prediction: nothing of anyone's padding leaks in
    assert torch.allclose(out, out[:1].expand_as(out))
    assert not math.isnan(float(out.std()))


def _setup(dm):
    dm.prepare_data()
    dm.setup("test")
    return dm


def test_predict_writes_every_patient_of_the_chosen_split(synthetic_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fit = cli_main(["fit", *_base(synthetic_cohort), "--trainer.max_epochs=1", "--trainer.logger=false",
                    "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", str(tmp_path / "run")])
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    cli = cli_main(["predict", *_base(synthetic_cohort), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                    "--trainer.default_root_dir", str(tmp_path / "run"), "--data.predict_split", "all",
                    "--ckpt_path", ckpt])
    path = tmp_path / "run" / "predictions_all.csv"
    assert f"written to {path}" in capsys.readouterr().out
    table = pd.read_csv(path, dtype={"patient_id": str})
    splits = cli.datamodule.cohort.splits
    assert list(table["patient_id"]) == [*splits["train"], *splits["val"], *splits["test"]]  # every patient, once
    assert (table.set_index("patient_id").loc[list(splits["val"]), "split"] == "val").all()
    # the risks are the checkpoint's own outputs on the test loader (eval mode: train patients too)
    model = ClinFuseModule.load_from_checkpoint(ckpt).eval()
    batch = next(iter(_setup(cli.datamodule).test_dataloader()))
    with torch.no_grad():
        expected = model(batch["inputs"])[0].numpy()
    got = table.set_index("patient_id").loc[batch["patient_id"], "risk"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_unknown_predict_split_is_refused(synthetic_cohort):
    with pytest.raises(ValueError, match="predict_split='holdout'"):
        ClinicalDataModule(str(synthetic_cohort), predict_split="holdout")


def test_predictions_frame_by_task():
    batches = [{"patient_id": ["a", "b"], "out": torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])}]
    table = predictions_frame(batches, "multiclass", {"a": "test"})
    assert list(table.columns) == ["patient_id", "split", "probability_0", "probability_1", "probability_2"]
    assert table.loc[0, "probability_1"] == pytest.approx(1 / 3)
    assert table.loc[1, "probability_0"] == pytest.approx(np.exp(2) / (np.exp(2) + 2))
    assert table.loc[1, "split"] == "" or pd.isna(table.loc[1, "split"])
    binary = predictions_frame([{"patient_id": ["a"], "out": torch.tensor([0.0])}], "binary", {})
    assert binary.loc[0, "probability"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no patient"):
        predictions_frame([], "survival", {})


def test_lr_scheduler_alone_schedules_the_models_adamw(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main(["fit", *_base(synthetic_cohort), "--data.modalities=[tabular, genomics]", "--trainer.max_epochs=2",
                    "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                    "--lr_scheduler", "StepLR", "--lr_scheduler.step_size=1", "--lr_scheduler.gamma=0.1"])
    (optimizer,) = cli.trainer.optimizers
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)  # the model's own settings
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1**2)  # stepped after each of 2 epochs
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.StepLR)


@pytest.mark.parametrize("sub", ["fit", "validate", "test", "predict"])
def test_lightning_subcommands_are_not_shadowed_by_clinfuse_commands(sub, monkeypatch, capsys):
    import sys

    from clinfuse.experiments.cli import main

    monkeypatch.setattr(sys, "argv", ["clinfuse", sub, "--help"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    assert "--ckpt_path" in capsys.readouterr().out  # LightningCLI's own subcommand parser


def test_fit_with_a_tiny_test_split_warns_and_still_logs_the_model(synthetic_cohort, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "tiny_test"
    shutil.copytree(synthetic_cohort, root, ignore=shutil.ignore_patterns("ecg", "wsi", ".clinfuse_cache"))
    splits = pd.read_csv(root / "splits.csv")
    test = splits.index[splits["split"] == "test"]
    splits.loc[test[4:], "split"] = "train"  # 4 test patients: too few for tertiles and calibration bins
    splits.to_csv(root / "splits.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.warns(UserWarning, match=r"after fit: no survival figures or report: the test split has 4 patient"):
        cli_main(["fit", *_base(root), "--data.modalities=[tabular, genomics]", "--trainer.max_epochs=1",
                  "--trainer.enable_progress_bar=false"])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id])
    assert run.info.status == "FINISHED" and "clinfuse.prognosis_model_uri" in run.data.tags


def test_lightning_tips_are_not_printed_by_clinfuse_commands(synthetic_cohort, tmp_path, monkeypatch):
    import logging

    monkeypatch.chdir(tmp_path)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    log.addHandler(handler)
    try:
        cli_main(["fit", *_base(synthetic_cohort), "--data.modalities=[tabular]", "--trainer.fast_dev_run=1",
                  "--trainer.logger=false"])
    finally:
        log.removeHandler(handler)
    assert seen and not [m for m in seen if "Tip:" in m], seen  # Lightning's other notes still come through


def test_predict_from_another_folder_does_not_warn_about_the_old_checkpoint_folder(synthetic_cohort, tmp_path, monkeypatch):
    import warnings

    monkeypatch.chdir(tmp_path)
    base = [*_base(synthetic_cohort), "--data.modalities=[tabular]", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false"]
    fit = cli_main(["fit", *base, "--trainer.max_epochs=1", "--trainer.default_root_dir", str(tmp_path / "a")])
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli_main(["test", *base, "--trainer.default_root_dir", str(tmp_path / "b"), "--ckpt_path", ckpt])
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]


def test_a_test_run_is_tagged_with_its_checkpoint_and_training_run(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = [*_base(synthetic_cohort), "--data.modalities=[tabular]", "--trainer.enable_progress_bar=false"]
    fit = cli_main(["fit", *base, "--trainer.max_epochs=1"])
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    trained = fit.trainer.logger.run_id
    test = cli_main(["test", *base, "--ckpt_path", ckpt])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = client.get_run(test.trainer.logger.run_id).data.tags
    assert tags["clinfuse.trained_in_run"] == trained and tags["clinfuse.checkpoint"] == str(Path(ckpt).resolve())


def test_a_fit_resumed_into_the_same_run_keeps_the_first_config(synthetic_cohort, tmp_path, monkeypatch):
    """Fitting on into a run by its id (longer, same hyperparameters: MLflow params cannot change)
    records each later config next to the first instead of over it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    quick = ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
             "--trainer.enable_progress_bar=false"]
    cli_main(["fit", *_base(synthetic_cohort), *quick, "--trainer.max_epochs=1"])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id])
    cli_main(["fit", *_base(synthetic_cohort), *quick, "--trainer.max_epochs=2",
              f"--trainer.logger.init_args.run_id={run.info.run_id}"])

    def config(name: str) -> str:
        return Path(client.download_artifacts(run.info.run_id, name, str(tmp_path / name))).read_text()

    assert "max_epochs: 1\n" in config("config.yaml")  # the run's first config stays
    assert "max_epochs: 2\n" in config("config-resumed-1.yaml")


def test_a_fit_resumed_into_the_same_run_with_other_hyperparameters_says_what_to_do(synthetic_cohort, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    quick = ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
             "--trainer.enable_progress_bar=false", "--data.modalities=[tabular]"]
    cli_main(["fit", *_base(synthetic_cohort), *quick, "--trainer.max_epochs=1"])
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id])
    with pytest.raises(ValueError, match=r"(?s)already holds other values.*'lr'.*0\.001.*0\.002.*leave out "
                                         r"--trainer.logger.init_args.run_id"):
        cli_main(["fit", *_base(synthetic_cohort), *quick, "--trainer.max_epochs=2", "--model.lr=0.002",
                  f"--trainer.logger.init_args.run_id={run.info.run_id}"])
    assert client.get_run(run.info.run_id).data.params["lr"] == "0.001"  # the run is left as it was


def test_each_resumption_gets_the_next_config_name():
    from types import SimpleNamespace

    from clinfuse.experiments.tracking import config_artifact_name

    def client(*names: str) -> SimpleNamespace:
        return SimpleNamespace(list_artifacts=lambda run_id: [SimpleNamespace(path=n) for n in names])

    assert config_artifact_name(client("model", "figures"), "r") == "config.yaml"
    assert config_artifact_name(client("config.yaml"), "r") == "config-resumed-1.yaml"
    assert config_artifact_name(client("config.yaml", "config-resumed-1.yaml"), "r") == "config-resumed-2.yaml"
