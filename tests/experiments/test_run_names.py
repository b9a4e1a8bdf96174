"""MLflow run names of `clinfuse fit`: distinct and meaningful although every fit is seeded."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import mlflow

from clinfuse.experiments.cli import cli_main
from clinfuse.experiments.tracking import fusion_name, run_name
from clinfuse.fusion.masked_mean import MaskedMeanFusion
from clinfuse.fusion.multimodn import MultiModNFusion

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def _fit(cohort: Path, *extra: str):
    """A seeded (quickstart: ``seed_everything: 0``) one-batch fit through the CLI's MLflow logger."""
    args = ["--config", str(QUICKSTART), f"--data.root={cohort}", "--data.synth_if_missing=false",
            "--data.modalities=[tabular]", "--data.batch_size=32", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.logger.init_args.log_model=false", *extra]
    cli = cli_main(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer.logger.run_id


def _names(tmp_path: Path) -> dict[str, str]:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("clinfuse").experiment_id])
    return {r.info.run_id: r.info.run_name for r in runs}


def test_seeded_fits_get_distinct_names_with_head_task_and_loss(synthetic_cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = _fit(synthetic_cohort), _fit(synthetic_cohort)  # the same config, the same seed
    masked = _fit(synthetic_cohort, "--config", str(REPO / "experiments" / "configs" / "fusion" / "masked_mean.yaml"))
    given = _fit(synthetic_cohort, "--trainer.logger.init_args.run_name=my-baseline")
    names = _names(tmp_path)
    assert len(names) == 4
    assert names[first] != names[second]
    assert names[first].startswith("transformer-survival-cox-") and names[second].startswith("transformer-survival-cox-")
    assert names[masked].startswith("masked_mean-survival-cox-")
    assert names[given] == "my-baseline"  # a name the user gives is kept
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(first).data.tags["mlflow.runName"] == names[first]


def test_run_name_parts():
    now = datetime(2026, 6, 12, 15, 30, 12)
    surv = SimpleNamespace(fusion=MaskedMeanFusion(8, ["tabular"]), hparams={"task": "survival", "survival_loss": "pmf"})
    assert run_name(surv, "9f1c2d", now=now) == "masked_mean-survival-pmf-0612-153012-9f1c"
    assert run_name(surv, "9f1c2d", "test", now=now) == "masked_mean-survival-pmf-test-0612-153012-9f1c"
    binary = SimpleNamespace(fusion=MultiModNFusion(8, ["tabular"]), hparams={"task": "binary", "survival_loss": "cox"})
    assert run_name(binary, "abcd", now=now) == "multimodn-binary-0612-153012-abcd"  # no survival loss for a classifier


def test_fusion_name_of_a_head_outside_the_registry():
    class ResidualFusion(MaskedMeanFusion):
        pass

    assert fusion_name(ResidualFusion(8, ["tabular"])) == "residual"


def test_a_name_given_as_a_tag_is_kept(synthetic_cohort, tmp_path, monkeypatch):
    """`clinfuse sweep` names its trials with the ``mlflow.runName`` tag: that name stays."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_id = _fit(synthetic_cohort, "--trainer.logger.init_args.tags={mlflow.runName: tiny-trial-0}")
    assert _names(tmp_path)[run_id] == "tiny-trial-0"
