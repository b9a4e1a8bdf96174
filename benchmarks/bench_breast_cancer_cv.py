"""5-fold cross-validation on the built-in breast cancer cohort: clinfuse vs CoxPH vs RSF.

Run from the repository root::

    /work/venv/bin/python benchmarks/bench_breast_cancer_cv.py
    /work/venv/bin/python benchmarks/bench_breast_cancer_cv.py --modalities genomics --epochs 15

For every fold of ``write_breast_cancer_cohort`` (stratified by event, seed ``--seed``) it fits on
the same patients:

- clinfuse: the default tabular/genomics encoders, a fusion head (``--fusion``, default
  ``masked_mean``), Cox partial-likelihood loss, modality dropout 0.2, fixed ``--epochs`` (no early
  stopping, no checkpoint selection) on the train split; the val split is only monitored.
- lifelines ``CoxPHFitter(penalizer=0.1)`` on age, size, one-hot er/grade and the 76 probes
  (z-scored on the training rows), fitted on train + val.
- scikit-survival ``RandomSurvivalForest(n_estimators=200, min_samples_leaf=5, random_state=0)`` on
  the same columns, fitted on train + val.

Every model is scored with Harrell's C-index (sksurv ``concordance_index_censored``) on the test
fold. Prints one row per fold, then mean ± sd (sample sd over folds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def c_index(risk: np.ndarray, time_: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C-index of a risk score (higher = earlier event)."""
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(event.astype(bool), time_, risk)[0])


def design_matrix(clinical: pd.DataFrame, expression: pd.DataFrame) -> pd.DataFrame:
    """age, size, one-hot er / grade (unknown grade = all grade columns 0), the probes."""
    cats = pd.get_dummies(clinical[["er", "grade"]], drop_first=False, dtype=float)
    cats = cats.drop(columns=["er_negative", "grade_intermediate"])  # reference levels
    return pd.concat([clinical[["age", "size"]].astype(float), cats, expression], axis=1)


def fit_clinfuse(root: Path, args: argparse.Namespace) -> pd.Series:
    """Train one clinfuse model on the cohort's train split; log-risk per test patient."""
    import lightning.pytorch as pl
    import torch

    from clinfuse.datasets.datamodule import ClinicalDataModule
    from clinfuse.experiments.module import ClinFuseModule
    from clinfuse.fusion.registry import FUSION_HEADS

    pl.seed_everything(args.seed, verbose=False)
    dm = ClinicalDataModule(root=str(root), modalities=args.modalities, batch_size=args.batch_size, seed=args.seed)
    model = ClinFuseModule(spec=dm.spec, d_model=args.d_model, fusion=FUSION_HEADS[args.fusion], task="survival",
                           modality_dropout=args.modality_dropout if len(dm.spec) > 1 else 0.0,
                           lr=args.lr, weight_decay=args.weight_decay)
    trainer = pl.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    model.eval()
    ids, risk = [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            ids += list(batch["patient_id"])
            risk.append(model(batch["inputs"])[0].reshape(-1))
    return pd.Series(torch.cat(risk).numpy(), index=ids)


def fit_baselines(x: pd.DataFrame, labels: pd.DataFrame, fit_ids: list[str], test_ids: list[str]) -> dict[str, np.ndarray]:
    """CoxPH and RSF fitted on ``fit_ids``; risk scores on ``test_ids``."""
    from lifelines import CoxPHFitter
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    mean, std = x.loc[fit_ids].mean(), x.loc[fit_ids].std(ddof=0).replace(0, 1.0)
    z = (x - mean) / std
    train = z.loc[fit_ids].assign(time=labels.loc[fit_ids, "time"], event=labels.loc[fit_ids, "event"])
    cph = CoxPHFitter(penalizer=0.1).fit(train, duration_col="time", event_col="event")
    y = Surv.from_arrays(labels.loc[fit_ids, "event"].astype(bool), labels.loc[fit_ids, "time"])
    rsf = RandomSurvivalForest(n_estimators=200, min_samples_leaf=5, random_state=0, n_jobs=2)
    rsf.fit(z.loc[fit_ids].to_numpy(), y)
    return {
        "coxph": cph.predict_partial_hazard(z.loc[test_ids]).to_numpy().ravel(),
        "rsf": rsf.predict(z.loc[test_ids].to_numpy()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--fusion", default="masked_mean")
    parser.add_argument("--modalities", nargs="+", default=None, help="default: tabular genomics")
    parser.add_argument("--modality-dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    args = parser.parse_args()

    from clinfuse.datasets.builtin import load_breast_cancer_frames, write_breast_cancer_cohort

    clinical, expression, labels = load_breast_cancer_frames()
    x = design_matrix(clinical, expression)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for fold in range(args.folds):
            root = write_breast_cancer_cohort(Path(tmp) / f"fold{fold}", fold=fold, n_folds=args.folds, seed=args.seed)
            splits = pd.read_csv(root / "splits.csv", dtype=str).set_index("patient_id")["split"]
            test_ids = splits.index[splits == "test"].tolist()
            fit_ids = splits.index[splits != "test"].tolist()
            risk = {"clinfuse": fit_clinfuse(root, args).loc[test_ids].to_numpy()}
            risk.update(fit_baselines(x, labels, fit_ids, test_ids))
            t, e = labels.loc[test_ids, "time"].to_numpy(), labels.loc[test_ids, "event"].to_numpy()
            rows.append({"fold": fold, "n_test": len(test_ids), "events": int(e.sum()),
                         **{k: c_index(v, t, e) for k, v in risk.items()}})
    table = pd.DataFrame(rows)
    cols = ["clinfuse", "coxph", "rsf"]
    modalities = " + ".join(args.modalities or ["tabular", "genomics"])
    print(f"breast cancer (sksurv, n=198), {args.folds}-fold CV seed {args.seed}; clinfuse: {args.fusion}, "
          f"{modalities}, d_model {args.d_model}, {args.epochs} epochs; Harrell C-index on the test fold")
    print(f"{'fold':>5} {'n_test':>6} {'events':>6} {'clinfuse':>9} {'CoxPH':>9} {'RSF':>9}")
    for r in rows:
        print(f"{r['fold']:>5} {r['n_test']:>6} {r['events']:>6} " + " ".join(f"{r[c]:>9.3f}" for c in cols))
    print(f"{'mean':>5} {'':>6} {'':>6} " + " ".join(f"{table[c].mean():>9.3f}" for c in cols))
    print(f"{'sd':>5} {'':>6} {'':>6} " + " ".join(f"{table[c].std(ddof=1):>9.3f}" for c in cols))
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
