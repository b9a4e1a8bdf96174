"""Command-line arguments of `clinfuse`: the help lists every command, `synth` options, and a
`--ckpt_path` that does not fit the config's model or data fails with a clear error."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from clinfuse.experiments.cli import COMMANDS, cli_main, main, synth_main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
MASKED_MEAN = REPO / "experiments" / "configs" / "fusion" / "masked_mean.yaml"


def test_help_lists_clinfuses_own_commands(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["clinfuse", "--help"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0
    out = capsys.readouterr().out
    commands = out[out.index("clinfuse commands"):]
    for name in ("score", "evaluate", "compare", "synth", "convert", "sweep", "robustness"):
        assert f"\n  {name} " in commands, name
    assert set(COMMANDS) == {"score", "evaluate", "compare", "synth", "convert", "sweep", "robustness", "pretrain"}
    assert "fit" in out and "predict" in out  # LightningCLI's subcommands are still listed


def test_synth_help_says_an_earlier_cohort_folder_is_replaced(capsys):
    with pytest.raises(SystemExit):
        synth_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "must be absent or empty" not in text
    assert "an earlier clinfuse cohort folder" in text and "other files in it are left alone" in text


@pytest.mark.parametrize(
    ("value", "match"),
    [("[1,2]", "must be a JSON object.*got a list"), ("{bad", "not valid JSON"),
     ('{"ecg": 5}', "missingness\\['ecg'\\]"), ('{"nosuch": {"rate": 0.1}}', "unknown modality 'nosuch'")],
)
def test_synth_bad_missingness_is_an_argument_error(value, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        synth_main(["--out", str(tmp_path / "cohort"), "--patients", "10", "--missingness", value])
    assert done.value.code == 2  # argparse's usage error, not a traceback
    err = capsys.readouterr().err
    assert "argument --missingness" in err
    assert re.search(match, err), err
    assert not (tmp_path / "cohort").exists()


def _args(cohort: Path, *more: str) -> list[str]:
    return ["--config", str(QUICKSTART), *more, "--data.root", str(cohort), "--data.synth_if_missing=false",
            "--data.batch_size=32", "--data.max_patches=32", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def tabular_genomics_ckpt(synthetic_cohort, tmp_path_factory) -> Path:
    """A checkpoint of the quickstart model trained on tabular + genomics only (one batch)."""
    work = tmp_path_factory.mktemp("ckpt")
    cli = cli_main([*_args(synthetic_cohort, "--data.modalities=[tabular, genomics]"), "--trainer.max_epochs=1",
                    "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.default_root_dir", str(work)], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.save_checkpoint(work / "model.ckpt")
    return work / "model.ckpt"


@pytest.mark.parametrize("sub", ["predict", "test", "validate", "fit"])
def test_ckpt_of_other_modalities_is_refused_by_name(sub, tabular_genomics_ckpt, synthetic_cohort, tmp_path,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [sub, *_args(synthetic_cohort, "--data.modalities=[tabular, genomics, timeseries]"),
            "--trainer.max_epochs=1", "--ckpt_path", str(tabular_genomics_ckpt)]
    with pytest.raises(ValueError, match=r"trained on modalities \['genomics', 'tabular'\] with another spec than "
                                         r"the --config data \(\['genomics', 'tabular', 'timeseries'\]\)") as err:
        cli_main(args)
    assert str(tabular_genomics_ckpt) in str(err.value)


def test_ckpt_whose_weights_do_not_fit_the_model_is_refused_naming_the_difference(tabular_genomics_ckpt,
                                                                                 synthetic_cohort):
    # LightningCLI rebuilds the model from the checkpoint's hyperparameters; this is the safety net
    # for a model that still differs (here another fusion head on the same data)
    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.experiments.cli import check_checkpoint
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.fusion import MaskedMeanFusion

    spec = ClinicalDataModule(str(synthetic_cohort), modalities=["tabular", "genomics"]).spec
    model = ClinFuseModule(spec=spec, d_model=64, fusion=MaskedMeanFusion)
    with pytest.raises(ValueError, match=r"does not fit the model of the --config stack \(hyperparameters that "
                                         r"differ: \[.*'fusion'.*\]\): missing weights \['fusion\..*unexpected weights"):
        check_checkpoint(tabular_genomics_ckpt, model, spec)


def test_bad_input_to_clinfuses_own_commands_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    import sys

    from clinfuse.experiments.cli import main

    argv = ["clinfuse", "score", "--model", str(tmp_path / "nowhere"), "--root", str(tmp_path), "--out", str(tmp_path / "p.csv")]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("CLINFUSE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert str(exit_info.value.code).startswith(f"clinfuse score: error: {tmp_path / 'nowhere'}: not a prognosis folder")
    monkeypatch.setenv("CLINFUSE_DEBUG", "1")
    with pytest.raises(ValueError, match="not a prognosis folder"):
        main()


@pytest.mark.parametrize("extra, monitor, mode", [
    ([], "val/c_index", "max"),
    (["--checkpoint.monitor", "val/ibs"], "val/ibs", "min"),
    (["--checkpoint.monitor", "val/uno_c_index"], "val/uno_c_index", "max"),
    (["--model.task", "binary"], "val/auroc", "max"),
    (["--checkpoint.monitor", "val/task_loss"], "val/task_loss", "min"),
    (["--checkpoint.monitor", "val/loss"], "val/loss", "min"),
    (["--checkpoint.monitor", "val/step_loss"], "val/step_loss", "min"),
    (["--checkpoint.monitor", "val/d_calibration_p"], "val/d_calibration_p", "max"),
])
def test_checkpoint_monitor_defaults_to_the_task_and_can_be_set(synthetic_cohort, tmp_path, extra, monitor, mode):
    cli = cli_main(["--config", str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"),
                    f"--data.root={synthetic_cohort}", "--data.modalities=[tabular]", "--trainer.logger=false",
                    f"--trainer.default_root_dir={tmp_path}", *extra], run=False)
    ckpt = cli.trainer.checkpoint_callback
    assert (ckpt.monitor, ckpt.mode) == (monitor, mode)


@pytest.mark.parametrize("sub", ["test", "predict"])
def test_ckpt_on_other_splits_of_the_same_files_is_refused(sub, tabular_genomics_ckpt, synthetic_cohort, tmp_path,
                                                           monkeypatch):
    # the same files with another splits.csv: "test" patients would include the model's training patients
    import pandas as pd

    other = tmp_path / "resplit"
    other.mkdir()
    for f in synthetic_cohort.iterdir():
        if f.name != "splits.csv" and not f.name.startswith("."):
            (other / f.name).symlink_to(f)
    splits = pd.read_csv(synthetic_cohort / "splits.csv", dtype=str)
    train, test = splits["split"] == "train", splits["split"] == "test"
    swap = splits.loc[train].index[: int(test.sum())]
    splits.loc[test, "split"], splits.loc[swap, "split"] = "train", "test"
    splits.to_csv(other / "splits.csv", index=False)
    monkeypatch.chdir(tmp_path)
    args = [sub, *_args(other, "--data.modalities=[tabular, genomics]"), "--ckpt_path", str(tabular_genomics_ckpt)]
    with pytest.raises(ValueError, match=r"training statistic .* differs from the one the model was trained with "
                                         r"\(another cohort or split\?\): run `clinfuse " + sub + r"` with the data "
                                         r"settings the model was trained with .*`clinfuse score` or `clinfuse evaluate`") as err:
        cli_main(args)
    assert str(tabular_genomics_ckpt) in str(err.value)


def test_fit_ckpt_path_last_resumes_the_newest_last_checkpoint(synthetic_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = [*_args(synthetic_cohort, "--data.modalities=[tabular]"), "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1", "--checkpoint.save_last=true", f"--trainer.default_root_dir={tmp_path / 'ck'}"]
    with pytest.raises(ValueError, match="--ckpt_path last: no last.ckpt under .*ck; the fit to resume needs "
                                         "--checkpoint.save_last true"):
        cli_main(["fit", *base, "--trainer.max_epochs=1", "--ckpt_path", "last"])
    cli_main(["fit", *base, "--trainer.max_epochs=1"])
    (last,) = (tmp_path / "ck").rglob("last.ckpt")
    capsys.readouterr()
    from clinfuse.experiments.module import ClinFuseModule

    steps = []
    original = ClinFuseModule.training_step
    monkeypatch.setattr(ClinFuseModule, "training_step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    cli = cli_main(["fit", *base, "--trainer.max_epochs=2", "--ckpt_path", "last"])
    assert f"resuming from {last}" in capsys.readouterr().err
    resumed = len(steps)
    steps.clear()
    cli_main(["fit", *base[:-1], f"--trainer.default_root_dir={tmp_path / 'scratch'}", "--trainer.max_epochs=2"])
    assert cli.trainer.current_epoch == 2 and 0 < resumed and 2 * resumed == len(steps)  # one epoch of two: resumed
