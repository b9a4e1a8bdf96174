"""The ``clinfuse`` command line: LightningCLI subcommands plus ``clinfuse synth``.

    clinfuse synth --out data/synthetic --patients 2000 --seed 0
    clinfuse fit --config experiments/quickstart.yaml
    clinfuse pretrain --config experiments/quickstart.yaml --unlabelled data/unlabelled --out pretrained/ts.pt
    clinfuse sweep --config experiments/quickstart.yaml --sweep experiments/sweeps/quickstart.yaml --n-trials 20
    clinfuse convert ptbxl --src /data/ptb-xl --out data/ptbxl     (also meds, mimic_iv, tcga, builtin)
    clinfuse robustness --config experiments/quickstart.yaml --heads masked_mean,transformer --epochs 6
    clinfuse score --model <predictor dir or MLflow URI> --root <cohort folder> --out predictions.csv
    clinfuse compare --models <A> <B> --root <cohort folder> --split test [--by sex]
    clinfuse evaluate --model <predictor> --root <labelled cohort folder> --out <report folder>

``clinfuse --help`` ends with the table of clinfuse's own commands (``COMMANDS``). A ``--ckpt_path``
file must fit the ``--config`` data (same modalities and spec), else fit/validate/test/predict stop
with an error naming the checkpoint and both modality lists.

``predict --ckpt_path <ckpt> [--data.predict_split all]`` writes
``<trainer.default_root_dir>/predictions_<split>.csv``. ``fit`` trains, then tests the best checkpoint and prints the test metrics next to the cohort's
oracle metrics (when the cohort has an oracle, as synthetic cohorts do).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from types import MethodType
from collections.abc import Sequence

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import MLFlowLogger

from clinfuse.datasets.datamodule import ClinicalDataModule
from clinfuse.experiments.metric_direction import lower_is_better
from clinfuse.experiments.module import ClinFuseModule, monitor_for
from clinfuse.experiments.oracle import format_comparison, oracle_metrics
from clinfuse.experiments.training_match import check_checkpoint_data
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
        # checkpoint.monitor stays settable: unset, it becomes the task's metric (before_instantiate_classes)

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

    def before_instantiate_classes(self) -> None:
        """``checkpoint.monitor`` defaults to the task's metric (``monitor_for``); a metric the user
        names where lower is better (a loss, ``ibs``, a Brier score) is minimised."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        ckpt = config.get("checkpoint")
        if ckpt is None:
            return
        if not ckpt.get("monitor"):
            ckpt["monitor"] = monitor_for(config["model"]["task"])
        elif ckpt.get("mode") == "max" and lower_is_better(ckpt["monitor"]):
            ckpt["mode"] = "min"

    def before_fit(self) -> None:
        self._check_ckpt_path("fit")

    def before_validate(self) -> None:
        self._check_ckpt_path("validate")

    def before_test(self) -> None:
        self._check_ckpt_path("test")

    def before_predict(self) -> None:
        self._check_ckpt_path("predict")

    def _check_ckpt_path(self, subcommand: str) -> None:
        """A ``--ckpt_path`` file must fit the model the config stack builds (see ``check_checkpoint``);
        an evaluation's MLflow run is tagged with the checkpoint and the run that trained it."""
        path = self.config_init[subcommand].get("ckpt_path")
        if subcommand == "fit" and path == "last":  # Lightning would look in this run's new, empty folder
            path = self.config_init[subcommand]["ckpt_path"] = last_checkpoint(self.trainer.default_root_dir)
        if path and Path(str(path)).is_file():  # not "best", "last", "hpc", "registry" or a remote URL
            ckpt = check_checkpoint(path, self.model, self.datamodule.spec)
            # other splits would test on training patients; other statistics preprocess differently
            check_checkpoint_data(path, self.datamodule, fix=CKPT_DATA_FIX.format(subcommand=subcommand), ckpt=ckpt)
            tag_checkpoint_source(self.trainer, str(path))

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


#: what ``clinfuse test/validate/predict --ckpt_path`` on other data than the checkpoint's tells the user
CKPT_DATA_FIX = ("run `clinfuse {subcommand}` with the data settings the model was trained with (its config.yaml); "
                 "to score or validate it on another cohort use `clinfuse score` or `clinfuse evaluate` with its "
                 "prognosis model, which apply the model's own preprocessing")


def last_checkpoint(root: str | os.PathLike) -> str:
    """The newest ``last*.ckpt`` under ``root`` (``trainer.default_root_dir``: every fit writes into
    its own ``<experiment>/<run id>/checkpoints`` folder there), for ``clinfuse fit --ckpt_path last``.

    Raises:
        ValueError: there is none, saying how to get one.
    """
    found = sorted(Path(root).rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError(f"--ckpt_path last: no last.ckpt under {root}; the fit to resume needs "
                         "--checkpoint.save_last true, or pass its checkpoint file as --ckpt_path")
    print(f"resuming from {found[-1]}", file=sys.stderr)
    return str(found[-1])


def tag_checkpoint_source(trainer: object, path: str) -> None:
    """Tag every MLflow run of ``trainer`` with ``clinfuse.checkpoint`` and, when the path is one
    ``clinfuse fit`` wrote (``.../<run id>/checkpoints/...``), ``clinfuse.trained_in_run``: a test or
    predict run, or a resumed fit, is then traceable to its training run in the MLflow UI."""
    found = re.search(r"[/\\]([0-9a-f]{32})[/\\]checkpoints[/\\]", os.path.abspath(path))
    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            logger.experiment.set_tag(logger.run_id, "clinfuse.checkpoint", os.path.abspath(path))
            if found:
                logger.experiment.set_tag(logger.run_id, "clinfuse.trained_in_run", found.group(1))


def check_spec(path: str | Path, checkpoint_spec: dict, data_spec: dict) -> None:
    """Raise when a checkpoint was trained on other modalities or another spec than the data.

    Raises:
        ValueError: naming the checkpoint, its modalities and the data's, and the modalities whose spec differs.
    """
    if checkpoint_spec == data_spec:
        return
    differ = sorted(m for m in set(checkpoint_spec) & set(data_spec) if checkpoint_spec[m] != data_spec[m])
    detail = f"; the spec differs for {differ}" if differ else ""
    raise ValueError(f"checkpoint {path} was trained on modalities {sorted(checkpoint_spec)} with another spec than "
                     f"the --config data ({sorted(data_spec)}){detail}")


def check_checkpoint(path: str | Path, model: ClinFuseModule, data_spec: dict) -> dict:
    """Check that the checkpoint at ``path`` fits ``model`` and its data before Lightning loads it
    (which fails with a raw ``load_state_dict`` error otherwise). LightningCLI builds the model from
    the checkpoint's hyperparameters, but the data's spec and class/cause counts are linked in from
    the ``--config`` data, so those are what can differ.

    Returns:
        The checkpoint, memory-mapped (for further checks without reading it again).

    Raises:
        ValueError: the checkpoint's modality spec differs from ``data_spec`` (``check_spec``), or its
            weights do not match the model's (naming the hyperparameters that differ and a few weights).
    """
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # as LightningCLI reads its hparams
    hparams = dict(ckpt.get("hyper_parameters") or {})
    if "spec" in hparams:
        check_spec(path, hparams["spec"], data_spec)
    theirs, ours = ckpt.get("state_dict") or {}, model.state_dict()
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = sorted(k for k in set(ours) & set(theirs) if tuple(ours[k].shape) != tuple(theirs[k].shape))
    if not (missing or unexpected or shapes):
        return ckpt
    differ = sorted(k for k in set(hparams) & set(model.hparams) if _differs(hparams[k], model.hparams[k]))
    found = [f"{what} {keys[:3]}{' ...' if len(keys) > 3 else ''}" for what, keys in
             (("missing weights", missing), ("unexpected weights", unexpected), ("weights of another shape", shapes)) if keys]
    raise ValueError(f"checkpoint {path} does not fit the model of the --config stack (hyperparameters that differ: "
                     f"{differ or 'none found'}): {'; '.join(found)}")


def _differs(a: object, b: object) -> bool:
    try:
        return bool(a != b)
    except (TypeError, ValueError, RuntimeError):  # no plain truth value (arrays, tensors): shown as differing
        return True


def report_against_oracle(cli: LightningCLI, test_metrics: dict[str, float]) -> dict[str, float]:
    """Print model vs oracle on the test split and log the oracle figures to every logger."""
    oracle = oracle_metrics(cli.datamodule, cli.model.task)
    if oracle:
        from clinfuse.datasets.cohort import Cohort

        cohort = cli.datamodule.cohort
        print(format_comparison(test_metrics, oracle, cli.model.task, cohort.modalities,
                                Cohort.available_modalities(cohort.root)))
    if oracle and cli.trainer.is_global_zero:
        for logger in cli.trainer.loggers:
            logger.log_metrics({f"oracle/{k}": v for k, v in oracle.items()})
    return oracle


def log_survival_figures(cli: LightningCLI) -> None:
    """KM curves by predicted-risk group and a calibration plot, saved and logged to MLflow."""
    from clinfuse.experiments.survival_report import format_report, survival_figures

    # one folder per run: a second fit in the same folder must not overwrite the first one's figures
    run = next((lg.run_id for lg in cli.trainer.loggers if isinstance(lg, MLFlowLogger) and lg.run_id), None)
    outdir = Path(cli.trainer.default_root_dir) / "figures" / (run or time.strftime("%Y%m%d-%H%M%S"))
    try:
        figs = survival_figures(cli.model, cli.datamodule, outdir)
    except ValueError as err:  # a tiny or event-free test split: the run keeps its model and metrics
        warnings.warn(f"after fit: no survival figures or report: {err}", stacklevel=2)
        return
    print(format_report(figs["report"]))
    print(f"test log-rank p (risk groups, tertiles unless ties merge them) = {figs['logrank_p']:.3g}; figures in {outdir}")
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


class _NoLightningTips(logging.Filter):
    """Drops Lightning's "Tip: try installing litlogger / litmodels" adverts from clinfuse's
    commands: they suggest a cloud service, not anything about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> ClinFuseCLI:
    """Build (and with ``run`` execute) the Lightning CLI; importable for tests and sweeps."""
    from clinfuse.experiments.config_stack import stack_encoder_configs

    args = stack_encoder_configs(sys.argv[1:] if args is None else args)
    # ``args`` is always handed over on purpose (the rewritten command line, or a caller's list while
    # sys.argv holds pytest's or a notebook kernel's own arguments): LightningCLI's warning about
    # that is silenced here only, while the arguments are parsed
    tips = _NoLightningTips()
    lightning_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addFilter(tips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter.*")
            if args and args[0] in ("test", "validate", "predict"):  # no training: the old run's top-k does not matter
                warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")
            return _build(args, run)
    finally:
        lightning_log.removeFilter(tips)


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
        parser_kwargs={"description": "clinfuse: train and evaluate multimodal models (the LightningCLI subcommands\n"
                       "fit/validate/test/predict below; clinfuse's own commands at the end).",
                       "epilog": commands_help(), "formatter_class": _HelpFormatter},
    )


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help formatter that keeps the line breaks of the description and the epilog."""


def commands_help() -> str:
    """The table of clinfuse's own commands (``COMMANDS``) shown at the end of ``clinfuse --help``."""
    width = max(map(len, COMMANDS))
    rows = [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    return "clinfuse commands (each has its own --help, e.g. `clinfuse synth --help`):\n" + "\n".join(rows)


def synth_main(argv: Sequence[str]) -> None:
    """``clinfuse synth``: write a synthetic multimodal cohort folder."""
    from clinfuse.datasets.synthetic import DEFAULT_MISSINGNESS, generate_cohort, resolve_missingness

    p = argparse.ArgumentParser(prog="clinfuse synth", description=synth_main.__doc__)
    p.add_argument("--out", required=True,
                   help="folder to write: absent, empty, or an earlier clinfuse cohort folder, whose cohort files "
                   "are replaced (other files in it are left alone)")
    p.add_argument("--patients", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--causes", type=int, default=1,
                   help="competing causes of the event (2+ adds the labels' cause column and its oracle)")
    p.add_argument("--wsi-signal", choices=("amount", "grade", "focal"), default="amount",
                   help="amount: a slide's tumour share and tumour features carry the patient's state; grade: the "
                   "tumour share (2-20%%) is random and only the tumour patches' features carry it (the "
                   "multiple-instance setting, where averaging all patches dilutes the signal); focal: as grade "
                   "with a 0.5-3%% tumour share and a per-slide staining offset on every patch")
    p.add_argument("--wsi-stain-sd", type=float, default=None,
                   help="sd of a per-slide staining offset on every patch (default: 0.5 with --wsi-signal focal, "
                   "none otherwise; 0: none)")
    p.add_argument("--notes-signal", choices=("keywords", "context"), default="keywords",
                   help="keywords: each informative word is in a note because of the patient; context: the patient's "
                   "symptoms, trajectory and support sit next to random others and only word order tells them apart "
                   "(reports ... denies ...; now on ..., previously ...)")
    p.add_argument("--ts-signal", choices=("level_and_trend", "trend"), default="level_and_trend",
                   help="level_and_trend: a lab's level and its drift over the stay carry the patient's state; trend: "
                   "levels are random and only the drift does (one observation says nothing)")
    p.add_argument("--ecg-signal", choices=("rate", "rhythm"), default="rate",
                   help="rate: the heart rate (and QRS, ST, T) carry the patient's state; rhythm: the rate is random and "
                   "how irregular the beats are carries it (from sinus rhythm to atrial-fibrillation-like)")
    p.add_argument("--genomics-signal", choices=("coexpression", "exclusive"), default="coexpression",
                   help="coexpression: every gene of a pathway follows the patient's state; exclusive: one gene per "
                   "pathway and patient, drawn at random, carries it (mutually exclusive alterations)")
    p.add_argument("--tabular-signal", choices=("linear", "interaction"), default="linear",
                   help="linear: every lab column follows the patient's state; interaction: three pairs of lab columns "
                   "carry it only jointly (a random per-patient sign flips both, as a modifier that changes what a lab means)")
    p.add_argument(
        "--missingness",
        type=_json_object,
        default=None,
        help='JSON, e.g. \'{"ecg": {"mechanism": "mnar", "rate": 0.4}}\' (merged over the defaults: '
        + json.dumps(DEFAULT_MISSINGNESS)
        + ")",
    )
    a = p.parse_args(list(argv))
    try:  # merged over the defaults and checked here, so a bad setting is reported as the option's error
        missingness = resolve_missingness(a.missingness)
    except ValueError as err:
        p.error(f"argument --missingness: {err}")
    root = generate_cohort(a.out, n_patients=a.patients, seed=a.seed, missingness=missingness, n_causes=a.causes,
                          wsi_signal=a.wsi_signal, notes_signal=a.notes_signal, ts_signal=a.ts_signal,
                          ecg_signal=a.ecg_signal, genomics_signal=a.genomics_signal, tabular_signal=a.tabular_signal,
                          wsi_stain_sd=a.wsi_stain_sd)
    print(f"wrote a synthetic cohort of {a.patients} patients to {root}")


def _json_object(text: str) -> dict:
    """``--missingness``: a JSON object (argparse reports the error under the option's name)."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        example = '{"ecg": {"mechanism": "mcar", "rate": 0.4}}'
        raise argparse.ArgumentTypeError(
            f"must be a JSON object of modality -> settings, e.g. '{example}'; got a {type(value).__name__}: {text}")
    return value


#: command -> (module, function taking the remaining arguments, one-line summary for ``clinfuse --help``);
#: LightningCLI owns fit/validate/test/predict
COMMANDS = {
    "synth": ("clinfuse.experiments.cli", "synth_main", "write a synthetic multimodal cohort folder"),
    "convert": ("clinfuse.experiments.convert", "convert_main",
                "write a cohort folder from a real source (meds, mimic_iv, ptbxl, tcga, builtin)"),
    "pretrain": ("clinfuse.experiments.pretrain", "pretrain_main",
                 "pretrain the time-series encoder of a config stack (forecasting; unlabelled patients too)"),
    "sweep": ("clinfuse.experiments.sweep", "sweep_main", "run Optuna trials of a sweep file over stacked configs"),
    "evaluate": ("clinfuse.experiments.external_validation", "evaluate_main",
                 "external validation report of a saved predictor on a labelled cohort folder"),
    "compare": ("clinfuse.experiments.compare", "compare_main", "compare saved predictors on one cohort folder"),
    "score": ("clinfuse.experiments.prognosis_cohort", "score_main",
              "write a saved predictor's predictions for a cohort folder to CSV or parquet"),
    "robustness": ("clinfuse.experiments.robustness", "robustness_main",
                   "how fusion heads hold up when modalities go missing (CSV, plots, MLflow)"),
}


def main() -> None:
    """Console-script entry point (returns None)."""
    # Lightning 2.6 on torch 2.13 warns about its own pytree use on every batch transfer
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    argv = sys.argv[1:]
    if argv and argv[0] in COMMANDS:  # clinfuse's own commands; anything else goes to LightningCLI
        module, function, _ = COMMANDS[argv[0]]
        try:
            getattr(importlib.import_module(module), function)(argv[1:])  # imported on use: some are heavy
        except ValueError as err:  # bad input (named file, column, patient): the message, not a traceback
            if os.environ.get("CLINFUSE_DEBUG"):
                raise
            sys.exit(f"clinfuse {argv[0]}: error: {err}\n(set CLINFUSE_DEBUG=1 for the traceback)")
        return
    cli_main()
