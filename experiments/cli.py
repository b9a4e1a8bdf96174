"""The ``clinfuse`` command line: LightningCLI subcommands plus ``clinfuse synth``.

    clinfuse synth --out data/synthetic --patients 2000 --seed 0
    clinfuse fit --config experiments/quickstart.yaml
    clinfuse sweep --config experiments/quickstart.yaml --sweep experiments/sweeps/quickstart.yaml --n-trials 20
    clinfuse convert ptbxl --src /data/ptb-xl --out data/ptbxl     (also meds, mimic_iv, tcga, builtin)
    clinfuse robustness --config experiments/quickstart.yaml --heads masked_mean,transformer --epochs 6
    clinfuse score --model <predictor dir or MLflow URI> --root <cohort folder> --out predictions.csv
    clinfuse compare --models <A> <B> --root <cohort folder> --split test [--by sex]
    clinfuse evaluate --model <predictor> --root <labelled cohort folder> --out <report folder>

``predict --ckpt_path <ckpt> [--data.predict_split all]`` writes
``<trainer.default_root_dir>/predictions_<split>.csv``. ``fit`` trains, then tests the best checkpoint and prints the test metrics next to the cohort's
oracle metrics (when the cohort has an oracle, as synthetic cohorts do).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from pathlib import Path
from types import MethodType
from collections.abc import Sequence

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import MLFlowLogger

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.module import ClinFuseModule, monitor_for
from clinfuse.experiments.oracle import format_comparison, oracle_metrics
from clinfuse.experiments.tracking import MLflowSaveConfigCallback, default_logger_config


class ClinFuseCLI(LightningCLI):
    """LightningCLI with the data's modality spec and class count linked into the model."""

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001 - jsonargparse parser
        parser.link_arguments("data.spec", "model.spec", apply_on="instantiate")
        parser.link_arguments("data.n_classes", "model.n_classes", apply_on="instantiate")
        parser.link_arguments("data.n_causes", "model.n_causes", apply_on="instantiate")
        # One checkpoint callback owned by the trainer for the whole run (a callback returned by
        # LightningModule.configure_callbacks is replaced at test time, which breaks MLFlowLogger).
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.mode": "max", "checkpoint.filename": "best-{epoch}"})
        parser.link_arguments("model.task", "checkpoint.monitor", compute_fn=monitor_for)

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        """``--lr_scheduler`` alone schedules the model's own AdamW (``model.lr``,
        ``model.weight_decay``). LightningCLI uses a scheduler only together with ``--optimizer``
        and would silently drop it here; with ``--optimizer`` its own handling applies."""
        super()._add_configure_optimizers_method_to_model(subcommand)
        scheduler = self._get(self.config_init, "lr_scheduler")
        if not scheduler or self._get(self.config_init, "optimizer"):
            return
        from lightning.pytorch.cli import instantiate_class

        own = type(self.model).configure_optimizers  # the class's method: AdamW from the hyperparameters

        def configure_optimizers(model):  # noqa: ANN001, ANN202 - bound below
            optimizer = own(model)
            return LightningCLI.configure_optimizers(model, optimizer, instantiate_class(optimizer, scheduler))

        self.model.configure_optimizers = MethodType(configure_optimizers, self.model)

    def after_fit(self) -> None:
        """Test the best checkpoint and compare with the oracle."""
        if self.trainer.fast_dev_run or self.trainer.interrupted:
            return
        ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)
        report_against_oracle(self, results[0] if results else {})
        if self.model.task == "survival" and self.trainer.is_global_zero:
            log_survival_figures(self)
        if self.trainer.is_global_zero and ckpt:
            log_prognosis_model(self)

    def after_predict(self) -> None:
        """Write ``predictions_<split>.csv`` (patient id, split, risk or probabilities)."""
        from clinfuse.experiments.predictions_table import write_predictions

        write_predictions(self)

    def after_test(self) -> None:
        report_against_oracle(self, {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("test/")})


def report_against_oracle(cli: LightningCLI, test_metrics: dict[str, float]) -> dict[str, float]:
    """Print model vs oracle on the test split and log the oracle figures to every logger."""
    oracle = oracle_metrics(cli.datamodule, cli.model.task)
    print(format_comparison(test_metrics, oracle, cli.model.task))
    if oracle and cli.trainer.is_global_zero:
        for logger in cli.trainer.loggers:
            logger.log_metrics({f"oracle/{k}": v for k, v in oracle.items()})
    return oracle


def log_survival_figures(cli: LightningCLI) -> None:
    """KM curves by predicted-risk group and a calibration plot, saved and logged to MLflow."""
    from clinfuse.experiments.survival_report import format_report, survival_figures

    outdir = Path(cli.trainer.default_root_dir) / "figures"
    figs = survival_figures(cli.model, cli.datamodule, outdir)
    print(format_report(figs["report"]))
    print(f"test log-rank p (risk tertiles) = {figs['logrank_p']:.3g}; figures in {outdir}")
    for logger in cli.trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            for path in figs["paths"]:
                logger.experiment.log_artifact(logger.run_id, str(path), "figures")
            report = {f"test/report_{k}": float(v) for k, v in figs["report"].items()}
            logger.log_metrics({"test/logrank_p": figs["logrank_p"], **report})


def log_prognosis_model(cli: LightningCLI) -> None:
    """The best checkpoint as a ``Prognosis`` MLflow pyfunc model named ``prognosis`` in each MLflow
    run; its URI is the run's tag ``clinfuse.prognosis_model_uri``: ``mlflow models serve -m <uri>``
    serves it, ``mlflow.register_model(<uri>, name)`` puts it in the model registry."""
    import mlflow

    from clinfuse.experiments.prognosis import Prognosis

    loggers = [lg for lg in cli.trainer.loggers if isinstance(lg, MLFlowLogger)]
    if not loggers:
        return
    prognosis = Prognosis.from_training(cli.trainer.checkpoint_callback.best_model_path, cli.datamodule)
    previous = mlflow.get_tracking_uri()
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # log_model re-reads its artifacts: no bars
    try:
        for logger in loggers:
            mlflow.set_tracking_uri(logger._tracking_uri)
            with mlflow.start_run(run_id=logger.run_id):
                info = prognosis.log_to_mlflow("prognosis")
                mlflow.set_tag("clinfuse.prognosis_model_uri", info.model_uri)  # MLflow 3: a models:/<id> URI
            print(f"prediction model logged: {info.model_uri} (serve: mlflow models serve -m {info.model_uri} --env-manager local)")
    finally:
        mlflow.set_tracking_uri(previous)
        if bar is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> ClinFuseCLI:
    """Build (and with ``run`` execute) the Lightning CLI; importable for tests and sweeps."""
    from clinfuse.experiments.config_stack import stack_encoder_configs

    args = stack_encoder_configs(sys.argv[1:] if args is None else args)
    # ``args`` is always handed over on purpose (the rewritten command line, or a caller's list while
    # sys.argv holds pytest's or a notebook kernel's own arguments): LightningCLI's warning about
    # that is silenced here only, while the arguments are parsed
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter.*")
        return _build(args, run)


def _build(args: list[str], run: bool) -> ClinFuseCLI:
    return ClinFuseCLI(
        ClinFuseModule,
        ClinicalDataModule,
        args=args,
        run=run,
        save_config_callback=MLflowSaveConfigCallback,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        # checkpoints land in ./checkpoints/<experiment>/<run>/ before MLflow uploads them
        trainer_defaults={"logger": default_logger_config(), "default_root_dir": "checkpoints"},
        parser_kwargs={"description": "clinfuse: train and evaluate multimodal models (LightningCLI "
                       "subcommands below). Generate a synthetic cohort with `clinfuse synth --help`."},
    )


def synth_main(argv: Sequence[str]) -> None:
    """``clinfuse synth``: write a synthetic multimodal cohort folder."""
    from clinfuse.datasets.synthetic import DEFAULT_MISSINGNESS, generate_cohort

    p = argparse.ArgumentParser(prog="clinfuse synth", description=synth_main.__doc__)
    p.add_argument("--out", required=True, help="folder to write (must be absent or empty)")
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--causes", type=int, default=1,
                   help="competing causes of the event (2+ adds the labels' cause column and its oracle)")
    p.add_argument(
        "--missingness",
        type=json.loads,
        default=None,
        help='JSON, e.g. \'{"ecg": {"mechanism": "mnar", "rate": 0.4}}\' (merged over the defaults: '
        + json.dumps(DEFAULT_MISSINGNESS)
        + ")",
    )
    a = p.parse_args(list(argv))
    missingness = {**DEFAULT_MISSINGNESS, **(a.missingness or {})}
    root = generate_cohort(a.out, n_patients=a.patients, seed=a.seed, missingness=missingness, n_causes=a.causes)
    print(f"wrote a synthetic cohort of {a.patients} patients to {root}")


#: command -> (module, function taking the remaining arguments); LightningCLI owns fit/validate/test/predict
COMMANDS = {
    "synth": ("clinfuse.experiments.cli", "synth_main"),
    "convert": ("clinfuse.experiments.convert", "convert_main"),
    "sweep": ("clinfuse.experiments.sweep", "sweep_main"),
    "evaluate": ("clinfuse.experiments.external_validation", "evaluate_main"),
    "compare": ("clinfuse.experiments.compare", "compare_main"),
    "score": ("clinfuse.experiments.prognosis_cohort", "score_main"),
    "robustness": ("clinfuse.experiments.robustness", "robustness_main"),
}


def main() -> None:
    """Console-script entry point (returns None)."""
    # Lightning 2.6 on torch 2.13 warns about its own pytree use on every batch transfer
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:  # clinfuse's own commands; anything else goes to LightningCLI
        module, function = COMMANDS[argv[0]]
        getattr(importlib.import_module(module), function)(argv[1:])  # imported on use: some are heavy
        return
    cli_main()
