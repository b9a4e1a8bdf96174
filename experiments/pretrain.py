"""``clinfuse pretrain``: self-supervised pretraining of the time-series encoder of a config stack.

    clinfuse pretrain --config experiments/quickstart.yaml --config experiments/configs/encoders/strats.yaml \\
        --unlabelled data/unlabelled --epochs 4 --out pretrained/timeseries.pt
    clinfuse fit --config experiments/quickstart.yaml --config experiments/configs/encoders/strats.yaml \\
        --model.encoder_weights '{"timeseries": "pretrained/timeseries.pt"}'

The config stack builds the model and the data module exactly as ``clinfuse fit`` would (other
``--model.*``/``--data.*`` flags pass through), so the pretrained encoder has the class, init
arguments, ``d_model`` and preprocessing the fit uses. The task is STraTS's forecasting
(:class:`~clinfuse.experiments.forecast_pretrain.ForecastPretrainModule`) on the training patients'
time series plus, with ``--unlabelled``, every patient of that folder's ``timeseries.parquet``
(:func:`~clinfuse.experiments.unlabelled_series.pretraining_loader`). The validation patients'
forecasting error is printed before and after (same cut-offs both times), so a run that learned
nothing shows.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="clinfuse pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="config files, stacked as for clinfuse fit")
    p.add_argument("--out", required=True, help="the encoder weights file to write (.pt)")
    p.add_argument("--unlabelled", default=None,
                   help="folder with a timeseries.parquet of patients without labels (cohort format) to pretrain on too")
    p.add_argument("--epochs", type=int, default=10, help="pretraining epochs (default 10; with 1,200 training patients 17 did better than 10: docs/benchmarks/encoders.md)")
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
    import lightning.pytorch as pl

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
    pre = ForecastPretrainModule(encoder, forecast_hours=a.forecast_hours, lr=a.lr)
    train = pretraining_loader(dm, a.unlabelled, batch_size=a.batch_size, seed=a.seed)
    val = split_loader(dm, "val", batch_size=a.batch_size)
    tips, lightning_log = _NoLightningTips(), logging.getLogger("lightning.pytorch.utilities.rank_zero")
    lightning_log.addFilter(tips)
    try:
        trainer = pl.Trainer(max_epochs=a.epochs, logger=False, enable_checkpointing=False, enable_model_summary=False,
                             accelerator="auto", devices=1, default_root_dir=cli.trainer.default_root_dir)
        before = _val_loss(trainer, pre, val, a.seed)
        pl.seed_everything(a.seed, verbose=False)
        trainer.fit(pre, train_dataloaders=train, val_dataloaders=val)
        after = _val_loss(trainer, pre, val, a.seed)
    finally:
        lightning_log.removeFilter(tips)
    labelled = dm.cohort.readers["timeseries"]
    n_unlabelled = sum(1 for reader, _ in train.dataset.sources if reader is not labelled)
    info = {"task": "forecast", "forecast_hours": a.forecast_hours, "epochs": a.epochs, "lr": a.lr,
            "cohort": str(dm.cohort.root), "unlabelled": str(a.unlabelled) if a.unlabelled else None,
            "patients": len(train.dataset), "unlabelled_patients": n_unlabelled,
            "val_loss_before": before, "val_loss_after": after,
            "statistics": fitted_statistics(labelled.state_dict()["fitted"])}
    out = save_encoder_weights(encoder, a.out, "timeseries", dm.spec["timeseries"], info)
    print(f"pretrained {type(encoder).__name__} on {len(train.dataset)} patients "
          f"({len(train.dataset) - n_unlabelled} training + {n_unlabelled} unlabelled) for {a.epochs} epochs; "
          f"validation forecasting MSE {_fmt(before)} -> {_fmt(after)}\nwrote {out}\n"
          f"use it: clinfuse fit {' '.join([*(f'--config {c}' for c in a.config), *extra])} "
          f"--model.encoder_weights '{{\"timeseries\": \"{out}\"}}'")
    return out


def _val_loss(trainer, pre, val, seed: int) -> float | None:  # noqa: ANN001 - Lightning objects
    """The validation patients' forecasting error at cut-offs drawn from ``seed`` (None without any)."""
    import lightning.pytorch as pl

    if val is None:
        return None
    pl.seed_everything(seed, verbose=False)
    result = trainer.validate(pre, dataloaders=val, verbose=False)
    return float(result[0]["pretrain/val_loss"]) if result and "pretrain/val_loss" in result[0] else None


def _fmt(x: float | None) -> str:
    return "n/a (no validation patient with time series)" if x is None else f"{x:.4f}"
