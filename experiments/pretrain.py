"""``clinfuse pretrain``: self-supervised pretraining of the time-series encoder of a config stack.

    clinfuse pretrain --config experiments/quickstart.yaml --config experiments/configs/encoders/strats.yaml \\
        --unlabelled data/unlabelled --out pretrained/timeseries.pt
    clinfuse fit --config experiments/quickstart.yaml --config experiments/configs/encoders/strats.yaml \\
        --model.encoder_weights '{"timeseries": "pretrained/timeseries.pt"}'

The config stack builds the model and the data module exactly as ``clinfuse fit`` would (other
``--model.*``/``--data.*`` flags pass through), so the pretrained encoder has the class, init
arguments, ``d_model`` and preprocessing the fit uses. The task is STraTS's forecasting
(:class:`~clinfuse.experiments.forecast_pretrain.ForecastPretrainModule`) on the training patients'
time series plus, with ``--unlabelled``, every patient of that folder's ``timeseries.parquet``
(:func:`~clinfuse.experiments.unlabelled_series.pretraining_loader`). The validation patients'
forecasting error is printed before and after (same cut-offs both times), so a run that learned
nothing shows. Pretraining runs up to ``--epochs`` and stops early when the validation loss (at
the same cut-offs every epoch) has not improved for ``--patience`` epochs; the weights of the
best validation epoch are the ones written. The run is recorded in MLflow as ``clinfuse fit``'s
are (``MLFLOW_TRACKING_URI``, else ``./mlflow.db``; experiment ``clinfuse``): the options as
params, the per-epoch losses, the validation loss before and after, the weights file as an
artifact; ``--no-mlflow`` skips it.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="clinfuse pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="config files, stacked as for clinfuse fit")
    p.add_argument("--out", required=True, help="the encoder weights file to write (.pt)")
    p.add_argument("--unlabelled", default=None,
                   help="folder with a timeseries.parquet of patients without labels (cohort format) to pretrain on too")
    p.add_argument("--epochs", type=int, default=30, help="at most this many pretraining epochs (default 30)")
    p.add_argument("--patience", type=int, default=3,
                   help="stop when the validation forecasting loss has not improved for this many epochs (default 3; "
                        "0: never stop early); the best epoch's weights are written")
    p.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")
    p.add_argument("--forecast-hours", type=float, default=2.0, help="forecast window after each cut-off (STraTS: 2)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate of the pretraining")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffling and the cut-offs")
    a, extra = p.parse_known_args(list(argv))
    if not a.config:
        raise ValueError("clinfuse pretrain needs at least one --config (the config stack clinfuse fit will use)")
    for path in a.config:
        if not Path(path).is_file():
            raise ValueError(f"file not found: {path} (given as --config)")
    if a.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {a.epochs}")
    if a.patience < 0:
        raise ValueError(f"--patience must be >= 0, got {a.patience}")
    if not a.forecast_hours > 0:
        raise ValueError(f"--forecast-hours must be > 0, got {a.forecast_hours}")
    if not a.lr > 0:
        raise ValueError(f"--lr must be > 0, got {a.lr}")
    if a.batch_size is not None and a.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.unlabelled is not None and not (Path(a.unlabelled) / "timeseries.parquet").is_file():
        raise ValueError(f"--unlabelled {a.unlabelled}: no timeseries.parquet there")
    return a, extra


def pretrain_main(argv: Sequence[str]) -> Path:
    """Run ``clinfuse pretrain`` with ``argv`` (after the command name); returns the written file."""
    a, extra = _parse(argv)
    from clinfuse.experiments.cli import _NoLightningTips, cli_main
    from clinfuse.experiments.encoder_weights import fitted_statistics, save_encoder_weights
    from clinfuse.experiments.forecast_pretrain import ForecastPretrainModule
    from clinfuse.experiments.unlabelled_series import pretraining_loader, split_loader

    args = [*(x for c in a.config for x in ("--config", c)), "--trainer.enable_model_summary=false", *extra,
            "--trainer.logger=false"]
    cli = cli_main(args, run=False)
    model, dm = cli.model, cli.datamodule
    if "timeseries" not in model.encoders:
        raise ValueError(f"clinfuse pretrain: the config stack loads {model.modalities}, no 'timeseries' "
                         "(forecasting pretraining is for the time-series encoder)")
    dm.prepare_data()
    dm.setup("fit")
    encoder = model.encoders["timeseries"]
    pre = ForecastPretrainModule(encoder, forecast_hours=a.forecast_hours, lr=a.lr, val_seed=a.seed)
    train = pretraining_loader(dm, a.unlabelled, batch_size=a.batch_size, seed=a.seed)
    val = split_loader(dm, "val", batch_size=a.batch_size)
    logger = None if a.no_mlflow else _mlflow_logger(encoder)
    best = BestWeights("pretrain/val_loss")
    callbacks = [best] if val is not None else []
    if val is not None and a.patience > 0:
        callbacks.append(EarlyStopping("pretrain/val_loss", patience=a.patience, mode="min"))
    tips, lightning_log = _NoLightningTips(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addFilter(tips)
    try:
        root = cli.trainer.default_root_dir
        evaluator = pl.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False,
                               enable_progress_bar=False, accelerator="auto", devices=1, default_root_dir=root)
        before = _val_loss(evaluator, pre, val)
        trainer = pl.Trainer(max_epochs=a.epochs, logger=logger or False, enable_checkpointing=False, log_every_n_steps=1,
                             enable_model_summary=False, accelerator="auto", devices=1, default_root_dir=root,
                             callbacks=callbacks)
        pl.seed_everything(a.seed, verbose=False)
        trainer.fit(pre, train_dataloaders=train, val_dataloaders=val)
        best.restore(pre)
        after = _val_loss(evaluator, pre, val)
    finally:
        lightning_log.removeFilter(tips)
    labelled = dm.cohort.readers["timeseries"]
    n_unlabelled = sum(1 for reader, _ in train.dataset.sources if reader is not labelled)
    ran = trainer.current_epoch  # epochs completed (early stopping may end before --epochs)
    info = {"task": "forecast", "forecast_hours": a.forecast_hours, "epochs": a.epochs, "epochs_run": ran,
            "best_epoch": best.epoch, "patience": a.patience, "lr": a.lr,
            "cohort": str(dm.cohort.root), "unlabelled": str(a.unlabelled) if a.unlabelled else None,
            "patients": len(train.dataset), "unlabelled_patients": n_unlabelled,
            "val_loss_before": before, "val_loss_after": after,
            "mlflow_run_id": logger.run_id if logger is not None else None,
            "statistics": fitted_statistics(labelled.state_dict()["fitted"])}
    out = save_encoder_weights(encoder, a.out, "timeseries", dm.spec["timeseries"], info)
    if logger is not None:
        _log_to_mlflow(logger, a, info, out, len(train.dataset) - n_unlabelled, type(encoder).__name__)
    stopped = (f"{ran} epochs (stopped early: no better validation loss for {a.patience}); best epoch {best.epoch + 1}"
               if best.epoch is not None and ran < a.epochs else
               f"{ran} epochs" + (f"; best epoch {best.epoch + 1}" if best.epoch is not None else ""))
    tracked = f"\nMLflow run {logger.run_id} (experiment {logger._experiment_name!r}, {logger._tracking_uri})" if logger else ""
    print(f"pretrained {type(encoder).__name__} on {len(train.dataset)} patients "
          f"({len(train.dataset) - n_unlabelled} training + {n_unlabelled} unlabelled) for {stopped}; "
          f"validation forecasting MSE {_fmt(before)} -> {_fmt(after)}\nwrote {out}{tracked}\n"
          f"use it: clinfuse fit {' '.join([*(f'--config {c}' for c in a.config), *extra])} "
          f"--model.encoder_weights '{{\"timeseries\": \"{out}\"}}'")
    return out


class BestWeights(pl.Callback):
    """Keeps a copy of the module's weights at its best ``monitor`` value (lowest) after each
    validation; :meth:`restore` puts them back (early stopping ends ``patience`` epochs past it)."""

    def __init__(self, monitor: str) -> None:
        self.monitor, self.best, self.epoch, self.state = monitor, None, None, None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or not torch.isfinite(value):
            return
        if self.best is None or float(value) < self.best:
            self.best, self.epoch = float(value), trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())

    def restore(self, pl_module: pl.LightningModule) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


def _mlflow_logger(encoder):  # noqa: ANN001, ANN202 - a ModalityEncoder; a WorkdirMLFlowLogger
    """A logger for the pretraining run in the store ``clinfuse fit`` uses, named
    ``pretrain-forecast-<encoder>-<MMDD-HHMMSS>``."""
    from datetime import datetime

    from clinfuse.experiments.tracking import EXPERIMENT_NAME, WorkdirMLFlowLogger

    name = f"pretrain-forecast-{type(encoder).__name__.removesuffix('Encoder').lower()}-{datetime.now():%m%d-%H%M%S}"
    return WorkdirMLFlowLogger(experiment_name=EXPERIMENT_NAME, run_name=name, tags={"clinfuse.kind": "pretrain"})


def _log_to_mlflow(logger, a: argparse.Namespace, info: dict, out: Path, n_training: int,  # noqa: ANN001
                   encoder_class: str) -> None:
    """The options, what the run did and the weights file, into the pretraining's MLflow run."""
    from clinfuse.experiments.tracking import code_version

    client, run = logger.experiment, logger.run_id
    params = {"config": ",".join(a.config), "epochs": a.epochs, "patience": a.patience, "lr": a.lr,
              "forecast_hours": a.forecast_hours, "batch_size": a.batch_size, "seed": a.seed,
              "unlabelled": a.unlabelled, "cohort": info["cohort"], "n_training_patients": n_training,
              "n_unlabelled_patients": info["unlabelled_patients"], "encoder_class": encoder_class}
    for key, value in params.items():
        if value is not None:
            client.log_param(run, key, value)
    for key in ("val_loss_before", "val_loss_after", "epochs_run", "best_epoch"):
        if info.get(key) is not None:
            client.log_metric(run, key, float(info[key]))
    for key, value in code_version().items():
        client.set_tag(run, key, value)
    client.log_artifact(run, str(out), "encoder_weights")


def _val_loss(trainer, pre, val) -> float | None:  # noqa: ANN001 - Lightning objects
    """The validation patients' forecasting error at the module's fixed validation cut-offs (None
    without any validation patient)."""
    if val is None:
        return None
    result = trainer.validate(pre, dataloaders=val, verbose=False)
    return float(result[0]["pretrain/val_loss"]) if result and "pretrain/val_loss" in result[0] else None


def _fmt(x: float | None) -> str:
    return "n/a (no validation patient with time series)" if x is None else f"{x:.4f}"
