"""``clinfuse robustness``: how fusion heads hold up when modalities go missing.

    clinfuse robustness --config experiments/quickstart.yaml [--ckpt model.ckpt ...] \\
        [--heads masked_mean,transformer,cascaded,multimodn] [--rates 0,0.2,0.4,0.6 | 0 0.2 0.4 0.6] \\
        [--out robustness] [--epochs 6] [--draws 5] [--shift-train] [--no-mlflow] [--data.root ... (CLI overrides)]

Models: every ``--ckpt`` (a trained ``ClinFuseModule``; the data come from the ``--config`` stack);
without ``--ckpt``, one model per head in ``--heads``, trained with the CLI on the config stack plus
``experiments/configs/fusion/<head>.yaml`` (logger off, ``--epochs`` overriding
``trainer.max_epochs``; the best validation checkpoint is evaluated and kept under
``<out>/checkpoints/<head>/``). Unknown ``--dotted.keys`` are passed on to the CLI.

Evaluations on the test split (eval mode; a removed modality is marked absent, never zero-filled).
Random removals (MCAR rates above 0, mar/mnar shifts) are drawn ``--draws`` times per condition
(default 1) from ``--seed``, and every head is scored on the same draws; the CSV has one row per
draw (column ``draw``), the printed table and the MCAR plot show the mean and the standard deviation
over draws. Draw 0 is the same table whatever ``--draws`` is.

* ``subset``: every non-empty subset of the loaded modalities; the others are removed for everyone.
* ``mcar``: each modality removed independently with probability ``rate`` (``--rates``), keeping at
  least one modality per patient (``--allow-empty`` turns that rule off; see
  :func:`~clinfuse.experiments.robustness_eval.random_removal`).
* ``mar`` / ``mnar``: train/test missingness shifts after the MultiModN experiment. Modalities
  (``--shift-modalities``, default all) go missing with the generator's mechanisms at mean rate
  ``--shift-rate``, driven by an observed value (``mar``: the numeric tabular column
  ``--mar-column``, default age; a cohort without an age column gets no mar shift, while a column
  named with ``--mar-column`` that is missing or not numeric is an error) or by the outcome
  (``mnar``: the event, or the binary label). Training direction: more missing
  for older patients / for positives; test direction: for younger patients / for negatives. Every
  model is scored on the test direction; with ``--shift-train`` an extra model per head and shift
  is trained with the training-direction removal applied to its train and validation batches
  (``trained_on`` = ``mar_shift`` / ``mnar_shift`` in the CSV), so the CSV compares a model that
  saw the shifted missingness in training with one that did not.

Metric: Harrell's C (survival) or AUROC (binary), next to the oracle's metric on the same patients
and kept modalities when the cohort has an oracle (:class:`~clinfuse.experiments.robustness_eval.OracleScorer`).
Writes ``<out>/robustness.csv`` (tidy), PNG plots (``robustness_plots``), prints a markdown table
and logs CSV + PNGs to one MLflow run named ``robustness`` (local sqlite store) unless ``--no-mlflow``.
"""

from __future__ import annotations

import argparse
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from clinfuse.datasets.missingness import remove_modalities
from clinfuse.experiments.robustness_eval import (
    OracleScorer,
    all_subsets,
    metric_name,
    predict,
    random_removal,
    score_metric,
    subset_name,
    subset_removal,
)

FUSION_CONFIGS = Path(__file__).resolve().parent / "configs" / "fusion"
SHIFTS = ("mar", "mnar")
DEFAULT_MAR_COLUMN = "age"


def known_heads() -> list[str]:
    """Heads with a config file under ``experiments/configs/fusion/``."""
    return sorted(p.stem for p in FUSION_CONFIGS.glob("*.yaml"))


@dataclass
class StudyModel:
    """A model under study: its head name, what its training missingness was, the module."""

    head: str
    trained_on: str
    model: Any


# ---------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse and validate the study's arguments; the unknown ones are CLI overrides."""
    p = argparse.ArgumentParser(prog="clinfuse robustness", description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", default=[], help="config file to stack (repeatable)")
    p.add_argument("--ckpt", action="append", default=[], help="trained ClinFuseModule checkpoint (repeatable)")
    p.add_argument("--heads", default="masked_mean,transformer,cascaded,multimodn",
                   help=f"heads to train when no --ckpt is given; known: {','.join(known_heads())}")
    p.add_argument("--rates", nargs="+", default=["0,0.2,0.4,0.6"],
                   help="MCAR test-time missing rates in [0, 1], comma- or space-separated (0,0.2,0.4 or 0 0.2 0.4)")
    p.add_argument("--out", default="robustness", help="folder for the CSV, plots and checkpoints")
    p.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs of the training runs")
    p.add_argument("--seed", type=int, default=0, help="seed of the test-time removals")
    p.add_argument("--draws", type=int, default=1,
                   help="random removal tables per MCAR rate and shift (mean and sd over them are reported)")
    p.add_argument("--shift-train", action="store_true", help="also train each head under the mar/mnar shifts")
    p.add_argument("--shift-rate", type=float, default=0.5, help="mean missing rate of the mar/mnar shifts")
    p.add_argument("--shift-modalities", default=None, help="modalities the shifts remove (default: all)")
    p.add_argument("--mar-column", default=None,
                   help=f"numeric tabular column driving the mar shift (default {DEFAULT_MAR_COLUMN!r}: without it the "
                   "cohort gets no mar shift; a column named here must exist and be numeric)")
    p.add_argument("--allow-empty", action="store_true", help="MCAR/shift removal may leave a patient with nothing")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    a, extra = p.parse_known_args(list(argv))
    if not a.config:
        raise ValueError("clinfuse robustness needs at least one --config (the data and model configs)")
    a.heads = [h.strip() for h in a.heads.split(",") if h.strip()]
    unknown = [h for h in a.heads if h not in known_heads()]
    if unknown and not a.ckpt:
        raise ValueError(f"unknown head(s) {unknown} in --heads; known heads: {known_heads()}")
    given = " ".join(a.rates)
    try:
        a.rates = [float(r) for r in ",".join(a.rates).split(",") if r.strip()]
    except ValueError as err:
        raise ValueError(f"--rates must be numbers, comma- or space-separated, got {given!r}") from err
    if not a.rates:
        raise ValueError(f"--rates names no rate, got {given!r}")
    bad = [r for r in a.rates if not 0.0 <= r <= 1.0]
    if bad or not 0.0 <= a.shift_rate < 1.0:
        raise ValueError(f"missing rates must lie in [0, 1] (--shift-rate in [0, 1)); got --rates {bad or a.rates} "
                         f"--shift-rate {a.shift_rate}")
    for path in [*a.ckpt, *a.config]:
        if not Path(path).is_file():
            raise ValueError(f"file not found: {path} (given as --{'ckpt' if path in a.ckpt else 'config'})")
    if a.epochs is not None and a.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {a.epochs}")
    if a.draws < 1:
        raise ValueError(f"--draws must be >= 1, got {a.draws}")
    a.shift_modalities = a.shift_modalities.split(",") if a.shift_modalities else None
    a.mar_column_given = a.mar_column is not None  # a named column must drive the shift; the default may be absent
    if a.mar_column is None:
        a.mar_column = DEFAULT_MAR_COLUMN
    return a, extra


# ---------------------------------------------------------------------------- models
class TrainingShift(Callback):
    """Applies a removal table (by ``patient_id``) to every train and validation batch."""

    def __init__(self, removal: pd.DataFrame) -> None:
        self.removal = removal

    def _apply(self, batch: dict[str, Any]) -> None:
        rows = self.removal.loc[batch["patient_id"]]
        drops = {m: torch.as_tensor(rows[m].to_numpy()) for m in rows.columns if m in batch["inputs"]}
        batch["inputs"] = remove_modalities(batch["inputs"], drops)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001 - Lightning hook
        self._apply(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        self._apply(batch)


def _cli_args(configs: Sequence[str], extra: Sequence[str]) -> list[str]:
    quiet = ["--trainer.enable_model_summary=false"]  # before the user's overrides, so they win
    return [*(x for c in configs for x in ("--config", str(c))), *quiet, *extra, "--trainer.logger=false"]


def build_datamodule(configs: Sequence[str], extra: Sequence[str]) -> Any:
    """The data module of the config stack (loaded, fitted and set up)."""
    from clinfuse.experiments.cli import cli_main

    dm = cli_main(_cli_args(configs, extra), run=False).datamodule
    dm.prepare_data()
    dm.setup("test")
    return dm


def train_head(head: str, configs: Sequence[str], extra: Sequence[str], out: Path, epochs: int | None,
               shift: str | None = None, settings: argparse.Namespace | None = None) -> StudyModel:
    """Fit one model with ``<head>.yaml`` stacked on ``configs``; ``shift`` adds a training-time shift."""
    from clinfuse.experiments.cli import cli_main
    from clinfuse.experiments.module import ClinFuseModule

    name = head if shift is None else f"{head}-{shift}_shift"
    args = _cli_args([*configs, FUSION_CONFIGS / f"{head}.yaml"], extra)
    args += [f"--trainer.default_root_dir={out / 'checkpoints' / name}"]
    if epochs is not None:
        args.append(f"--trainer.max_epochs={epochs}")
    cli = cli_main(args, run=False)
    if shift is not None:
        dm = cli.datamodule
        ids = [*dm.cohort.splits["train"], *dm.cohort.splits["val"]]
        removal = shift_removal(shift, +1, dm, ids, cli.model.task, settings)
        if removal is None:
            problem = mar_column_problem(dm.cohort.root, settings.mar_column)
            raise ValueError(f"--shift-train {shift}: no driver for this cohort: {problem} (see --mar-column)")
        cli.trainer.callbacks.append(TrainingShift(removal))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    model = ClinFuseModule.load_from_checkpoint(best, map_location="cpu") if best else cli.model
    print(f"trained {name}: {best or '(no checkpoint; last weights)'}")
    return StudyModel(head, "cohort" if shift is None else f"{shift}_shift", model.cpu().eval())


def load_checkpoints(paths: Sequence[str], datamodule: Any) -> list[StudyModel]:
    """Load checkpoints, named by fusion class (numbered when repeated); the data must match."""
    from clinfuse.experiments.cli import check_spec
    from clinfuse.experiments.module import ClinFuseModule

    models, seen = [], {}
    for path in paths:
        model = ClinFuseModule.load_from_checkpoint(path, map_location="cpu").eval()
        check_spec(path, model.hparams.spec, datamodule.spec)  # the same check as `clinfuse predict --ckpt_path`
        name = type(model.fusion).__name__
        seen[name] = seen.get(name, 0) + 1
        models.append(StudyModel(name if seen[name] == 1 else f"{name}#{seen[name]}", "cohort", model))
    return models


# ---------------------------------------------------------------------------- shifts
def mar_column_problem(cohort_root: str | Path, column: str) -> str | None:
    """Why ``column`` of the cohort's ``tabular.parquet`` cannot drive the mar shift; None when it can.

    It must exist and hold numbers (numbers stored as text count; text such as ``"F"`` does not).
    """
    import pyarrow.parquet as pq

    path = Path(cohort_root) / "tabular.parquet"
    if not path.is_file():
        return f"the cohort has no tabular table ({path} does not exist)"
    columns = [c for c in pq.read_schema(path).names if c != "patient_id"]
    if column not in columns:
        more = f" and {len(columns) - 20} more" if len(columns) > 20 else ""
        return f"{path} has no column {column!r} (its columns: {columns[:20]}{more})"
    raw = pd.read_parquet(path, columns=[column])[column]
    numbers = pd.to_numeric(raw, errors="coerce")
    text = raw[raw.notna() & numbers.isna()]
    if len(text):
        return f"column {column!r} of {path} is not numeric (it holds values such as {text.iloc[0]!r})"
    if numbers.isna().all():
        return f"column {column!r} of {path} has no value"
    return None


def check_mar_column(datamodule: Any, a: argparse.Namespace) -> None:
    """Refuse a ``--mar-column`` the user named that cannot drive the mar shift (the default may be absent).

    Raises:
        ValueError: naming the column and the file.
    """
    if getattr(a, "mar_column_given", False):
        problem = mar_column_problem(datamodule.cohort.root, a.mar_column)
        if problem:
            raise ValueError(f"--mar-column {a.mar_column!r}: {problem}; name a numeric tabular column")


def shift_driver(kind: str, datamodule: Any, ids: list[str], task: str, mar_column: str) -> np.ndarray | None:
    """The per-patient driver of a shift: the outcome (mnar) or a numeric tabular column (mar); None
    when that column cannot drive it (``mar_column_problem``)."""
    cohort = datamodule.cohort
    if kind == "mnar":
        col = "event" if task == "survival" else "binary"
        return cohort.labels.set_index("patient_id").loc[ids, col].to_numpy(float)
    if mar_column_problem(cohort.root, mar_column):
        return None
    path = Path(cohort.root) / "tabular.parquet"
    values = pd.read_parquet(path, columns=["patient_id", mar_column]).set_index("patient_id")[mar_column]
    values = pd.to_numeric(values.reindex(ids), errors="coerce")
    # a removal driver, never a model input: an unknown value drives at the median (no shift)
    return values.fillna(values.median()).to_numpy(float)


def removal_rng(seed: int, name: str, draw: int = 0) -> np.random.Generator:
    """The generator of one removal table: draw 0 is keyed by ``(seed, name)`` alone, so it does not
    change with the number of draws; later draws add their index."""
    key = (seed, zlib.crc32(name.encode()))
    return np.random.default_rng(key if draw == 0 else (*key, draw))


def shift_removal(kind: str, direction: int, datamodule: Any, ids: list[str], task: str,
                  a: argparse.Namespace, draw: int = 0) -> pd.DataFrame | None:
    """The removal table of a ``mar``/``mnar`` shift on ``ids``; ``direction`` +1 train, -1 test."""
    driver = shift_driver(kind, datamodule, ids, task, a.mar_column)
    if driver is None:
        return None
    presence = datamodule.cohort.presence().loc[ids]
    rng = removal_rng(a.seed, f"{kind}{direction}", draw)
    return random_removal(presence, kind, a.shift_rate, rng, a.shift_modalities, direction * driver, not a.allow_empty)


# ---------------------------------------------------------------------------- the study
def evaluations(datamodule: Any, task: str, a: argparse.Namespace) -> list[tuple[str, str, int, pd.DataFrame | None]]:
    """``(kind, condition, draw, removal table)`` of every test-time evaluation: one draw for the
    subsets and MCAR rate 0 (nothing random), ``a.draws`` for the other rates and the shifts."""
    ids = list(datamodule.cohort.splits["test"])
    presence = datamodule.cohort.presence().loc[ids]
    draws = getattr(a, "draws", 1)
    evals = [("subset", subset_name(s), 0, subset_removal(presence, s)) for s in all_subsets(list(presence.columns))]
    for rate in a.rates:
        for d in range(draws if rate > 0 else 1):
            rng = removal_rng(a.seed, f"mcar{rate}", d)
            evals.append(("mcar", f"{rate:g}", d, random_removal(presence, "mcar", rate, rng, keep_one=not a.allow_empty)))
    for kind in SHIFTS:
        if shift_driver(kind, datamodule, ids, task, a.mar_column) is None:
            print(f"no {kind} shift: {mar_column_problem(datamodule.cohort.root, a.mar_column)} (see --mar-column)")
            continue
        evals += [(kind, f"{a.shift_rate:g}", d, shift_removal(kind, -1, datamodule, ids, task, a, d)) for d in range(draws)]
    return evals


def run_study(models: Sequence[StudyModel], datamodule: Any, a: argparse.Namespace) -> pd.DataFrame:
    """Score every model under every evaluation; one tidy row per (model, evaluation)."""
    task = models[0].model.task
    metric = metric_name(task)
    ids = list(datamodule.cohort.splits["test"])
    labels = datamodule.cohort.labels.set_index("patient_id").loc[ids]
    presence = datamodule.cohort.presence().loc[ids]
    oracle = OracleScorer(datamodule.cohort, presence, task).setup()
    full = subset_name(presence.columns)
    batches = list(datamodule.split_dataloader("test"))  # loaded once, scored under every removal
    rows = []
    for kind, condition, draw, removal in evaluations(datamodule, task, a):
        kept = presence & ~removal
        oracle_value = oracle.metric(ids, labels, removal)
        for sm in models:
            if sm.trained_on != "cohort" and not (kind == "subset" and condition == full) and kind != sm.trained_on.removesuffix("_shift"):
                continue  # a shift-trained model is scored on the full set and on its own shift
            torch.manual_seed(a.seed)
            scores = predict(sm.model, batches, removal).set_index("patient_id").loc[ids, "score"]
            rows.append({"head": sm.head, "trained_on": sm.trained_on, "kind": kind, "condition": condition,
                         "draw": draw, "metric": metric, "value": score_metric(scores.to_numpy(), labels, task),
                         "oracle": oracle_value, "n_patients": len(ids),
                         "n_with_data": int(kept.any(axis=1).sum())})
    print(f"oracle: {oracle.mode} ({'per subset' if oracle.mode == 'subsets' else 'full set only' if oracle.mode == 'observed' else 'none'})")
    return pd.DataFrame(rows)


def full_set_name(results: pd.DataFrame) -> str:
    """The ``subset`` condition holding every modality (the one with the most ``+``)."""
    return max(results.loc[results["kind"] == "subset", "condition"], key=lambda c: c.count("+"))


def log_to_mlflow(files: Sequence[Path], results: pd.DataFrame, params: dict[str, str]) -> str:
    """One MLflow run named ``robustness`` with the CSV and plots; returns its id."""
    import mlflow

    from clinfuse.experiments.tracking import EXPERIMENT_NAME, default_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri())
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        EXPERIMENT_NAME, artifact_location=str(Path.cwd() / "mlartifacts"))
    run = client.create_run(exp_id, run_name="robustness")
    run_id = run.info.run_id
    for k, v in params.items():
        client.log_param(run_id, k, v)
    full = results[(results["kind"] == "subset") & (results["condition"] == full_set_name(results))]
    for r in full.itertuples():
        if np.isfinite(r.value):
            client.log_metric(run_id, f"{r.head}.{r.trained_on}.{r.metric}_all_modalities", float(r.value))
    for f in files:
        client.log_artifact(run_id, str(f), None if f.suffix == ".csv" else "plots")
    client.set_terminated(run_id)
    return run_id


def robustness_main(argv: Sequence[str]) -> pd.DataFrame:
    """``clinfuse robustness``: train or load models, evaluate, write CSV + plots, log to MLflow."""
    from clinfuse.experiments.robustness_plots import markdown_table, write_plots

    # LightningCLI warns that both sys.argv and args are given: args is the intended input here
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter.*")
    a, extra = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(a.config, extra)
    unknown = sorted(set(a.shift_modalities or []) - set(dm.modality_names))
    if unknown:
        raise ValueError(f"--shift-modalities names {unknown}; the data loads {dm.modality_names}")
    check_mar_column(dm, a)  # before any training
    if a.ckpt:
        models = load_checkpoints(a.ckpt, dm)
    else:
        models = [train_head(h, a.config, extra, out, a.epochs) for h in a.heads]
        if a.shift_train:
            models += [train_head(h, a.config, extra, out, a.epochs, s, a) for h in a.heads for s in SHIFTS]
    results = run_study(models, dm, a)
    csv = out / "robustness.csv"
    results.to_csv(csv, index=False)
    pngs = write_plots(results, out)
    print(markdown_table(results))
    print(f"wrote {csv} and {', '.join(str(p) for p in pngs)}")
    if not a.no_mlflow:
        params = {"configs": ",".join(a.config), "heads": ",".join(m.head for m in models),
                  "rates": ",".join(f"{r:g}" for r in a.rates), "seed": str(a.seed), "draws": str(a.draws),
                  "shift_rate": str(a.shift_rate)}
        run_id = log_to_mlflow([csv, *pngs], results, params)
        print(f"MLflow run 'robustness': {run_id}")
    return results
