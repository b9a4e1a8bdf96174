"""Encoder config files stack per modality: a later file keeps the encoders earlier files named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clinfuse.encoders import ABMILEncoder, FTTransformerEncoder, STraTSEncoder
from clinfuse.encoders.registry import ENCODERS
from clinfuse.experiments.cli import cli_main
from clinfuse.experiments.config_stack import stack_encoder_configs

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
ENC = REPO / "experiments" / "configs" / "encoders"


def _write(path: Path, encoders: dict) -> str:
    path.write_text(json.dumps({"model": {"encoders": encoders}}))  # JSON is YAML
    return str(path)


def test_earlier_encoders_are_re_added_after_a_later_file(tmp_path):
    a = _write(tmp_path / "a.yaml", {"tabular": {"class_path": "A"}, "ecg": {"class_path": "E1"}})
    b = _write(tmp_path / "b.yaml", {"ecg": {"class_path": "E2"}})
    other = tmp_path / "c.yaml"
    other.write_text("trainer: {max_epochs: 1}\n")
    args = ["fit", "--config", a, f"--config={b}", "--config", str(other), "--model.lr=0.1"]
    out = stack_encoder_configs(args)
    # tabular re-added right after b (b names only ecg: its ecg wins, so ecg is not re-added)
    assert out == ["fit", "--config", a, f"--config={b}", '--model.encoders.tabular={"class_path": "A"}',
                   "--config", str(other), "--model.lr=0.1"]


def test_args_without_encoder_files_are_unchanged(tmp_path):
    args = ["fit", "--config", str(QUICKSTART), "--trainer.max_epochs=1"]
    assert stack_encoder_configs(args) == args


def test_stacked_encoder_files_build_every_named_encoder(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main([
        "--config", str(QUICKSTART), "--config", str(ENC / "strats.yaml"),
        "--config", str(ENC / "ft_tabular.yaml"), "--config", str(ENC / "abmil.yaml"),
        "--data.root", str(synthetic_cohort), "--data.synth_if_missing=false", "--trainer.logger=false",
    ], run=False)
    enc = cli.model.encoders
    assert isinstance(enc["tabular"], FTTransformerEncoder)  # from ft_tabular.yaml
    assert isinstance(enc["wsi"], ABMILEncoder)  # from abmil.yaml
    assert isinstance(enc["timeseries"], STraTSEncoder)  # from strats.yaml, kept by the two later files
    assert type(enc["ecg"]).__name__ == ENCODERS["ecg"].__name__  # never named: the default


@pytest.mark.parametrize("later", ["utde.yaml", "strats.yaml"])
def test_a_later_file_for_the_same_modality_wins(later, synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = cli_main([
        "--config", str(QUICKSTART), "--config", str(ENC / "strats.yaml"), "--config", str(ENC / later),
        "--data.root", str(synthetic_cohort), "--data.synth_if_missing=false", "--trainer.logger=false",
    ], run=False)
    assert type(cli.model.encoders["timeseries"]).__name__ == {"utde.yaml": "UTDEEncoder", "strats.yaml": "STraTSEncoder"}[later]


def test_the_short_form_c_stacks_like_config(tmp_path):
    a = _write(tmp_path / "a.yaml", {"tabular": {"class_path": "A"}})
    b = _write(tmp_path / "b.yaml", {"ecg": {"class_path": "E2"}})
    assert stack_encoder_configs(["fit", "-c", a, "-c", b]) == [
        "fit", "-c", a, "-c", b, '--model.encoders.tabular={"class_path": "A"}']
    assert stack_encoder_configs(["fit", f"-c={a}", "--config", b])[-1] == '--model.encoders.tabular={"class_path": "A"}'
