"""What a Cox model reaches on a synthetic cohort's table, with and without the interaction features.

    python benchmarks/bench_tabular_reference.py --cohort-dir DIR [--train-sizes 720,1200,6000]

The oracle column of ``bench_encoders.py`` reads the generator's latent view. On a cohort made with
``tabular_signal="interaction"`` that is an upper bound no reader of the table reaches: each pair's
first column keeps only its magnitude, so what it carried is gone. This script measures the part
that *is* in the table: lifelines' ``CoxPHFitter`` (penalizer 0.01) on the training split's first
``n`` patients, scored by Harrell's C on the test split, with two feature sets:

- ``plain``: the numeric columns (log of the log-normal ones: creatinine, white cells),
  standardised with the training split's mean and sd, missing cells 0 plus a missing flag per
  column, each pair's first column's magnitude ``|s_a|``, one-hot categoricals;
- ``+ interactions``: the same plus ``sign(s_a) x s_b`` for every pair of
  ``INTERACTION_PAIRS``, the exact feature the generator hid.

A linear Cox on ``+ interactions`` is what a model that learnt the sign flips perfectly and nothing
else could do; ``plain`` is what a model that learnt none of them could do.

On a cohort whose labs were replaced by noisy copies (``bench_encoders.py --redundant-labs``:
columns ``<lab>_m1`` ...), the feature sets are instead, besides age and the categoricals:
``copies`` (each copy as in ``plain``, with its missing flag), ``sum`` and ``mean`` of each lab's
observed copies (on the lab's scale) with a none-observed flag, and ``pattern-optimal``: the sum
divided by ``n + noise^2`` for ``n`` observed copies (the posterior mean of the lab given its
copies, ``--redundant-noise`` as in the benchmark), the read whose weights depend on the pattern of
missing cells.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from sksurv.metrics import concordance_index_censored

from clinfuse.datasets.synthetic.tabular import CATEGORICAL, INTERACTION_PAIRS, NUMERIC


def features(table: pd.DataFrame, train: np.ndarray, interactions: bool) -> pd.DataFrame:
    """The design matrix (module docstring); ``train`` marks the rows whose mean and sd standardise."""
    x = pd.DataFrame({name: np.log(table[name]) if NUMERIC[name][4] else table[name] for name in NUMERIC})
    x = (x - x[train].mean()) / x[train].std()
    out = x.fillna(0.0)
    for name in NUMERIC:
        out[f"{name}_missing"] = x[name].isna().astype(float)
    for a, b in INTERACTION_PAIRS:
        out[f"|{a}|"] = out[a].abs()
        if interactions:
            out[f"sign({a})x{b}"] = np.sign(out[a]) * out[b]
    for name in CATEGORICAL:
        out = out.join(pd.get_dummies(table[name], prefix=name, dtype=float, drop_first=True))
    return out


REDUNDANT_SETS = ("copies", "sum", "mean", "pattern-optimal")


def redundant_features(table: pd.DataFrame, train: np.ndarray, kind: str, noise: float) -> pd.DataFrame:
    """The design matrix of ``kind`` (``REDUNDANT_SETS``, module docstring) for a table whose lab
    columns are ``redundant_labs`` copies; ``train`` marks the rows whose mean and sd standardise."""
    def standardised(col: str, log: bool) -> pd.Series:
        v = np.log(table[col]) if log else table[col]
        return (v - v[train].mean()) / v[train].std()

    out = pd.DataFrame({"age": standardised("age", False).fillna(0.0)})
    for lab in (name for name in NUMERIC if name != "age"):
        cols = sorted(c for c in table.columns if c.startswith(f"{lab}_m"))
        z = pd.DataFrame({c: standardised(c, NUMERIC[lab][4]) for c in cols})
        if kind == "copies":
            for c in cols:
                out[c], out[f"{c}_missing"] = z[c].fillna(0.0), z[c].isna().astype(float)
            continue
        on_lab_scale = z * np.sqrt(1 + noise**2)  # each copy has the lab's variance plus the noise's
        n, total = on_lab_scale.notna().sum(1), on_lab_scale.sum(1)
        out[lab] = {"sum": total, "mean": total / n.clip(lower=1), "pattern-optimal": total / (n + noise**2)}[kind]
        out[f"{lab}_none"] = (n == 0).astype(float)
    for name in CATEGORICAL:
        out = out.join(pd.get_dummies(table[name], prefix=name, dtype=float, drop_first=True))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohort-dir", required=True, help="a synthetic cohort folder (clinfuse synth)")
    p.add_argument("--train-sizes", default="720,1200,6000",
                   help="comma-separated: fit on the first n training patients (capped at the split)")
    p.add_argument("--redundant-noise", type=float, default=1.0,
                   help="the noise sd of the copies of a --redundant-labs cohort (for pattern-optimal)")
    a = p.parse_args()
    root = Path(a.cohort_dir)
    meta = json.loads((root / "cohort.json").read_text())
    table = (pd.read_parquet(root / "tabular.parquet").merge(pd.read_parquet(root / "labels.parquet"), on="patient_id")
             .merge(pd.read_csv(root / "splits.csv"), on="patient_id"))
    train, test = (table["split"] == "train").to_numpy(), (table["split"] == "test").to_numpy()
    print(f"{root}: tabular signal {meta.get('tabular', {}).get('signal', 'linear')!r}, "
          f"{train.sum()} train / {test.sum()} test patients\n")
    print("| features | train patients | test C-index (Harrell) |")
    print("|---|---|---|")
    redundant = any(c.endswith("_m1") for c in table.columns)
    sets = ({k: redundant_features(table, train, k, a.redundant_noise) for k in REDUNDANT_SETS} if redundant else
            {name: features(table, train, flag) for name, flag in (("plain", False), ("+ interactions", True))})
    for name, x in sets.items():
        x["time"], x["event"] = table["time"], table["event"].astype(bool)
        for n in sorted({min(int(s), int(train.sum())) for s in a.train_sizes.split(",")}):
            cox = CoxPHFitter(penalizer=0.01).fit(x[train].iloc[:n], "time", "event")
            risk = cox.predict_partial_hazard(x[test]).to_numpy()
            c = concordance_index_censored(x["event"][test].to_numpy(), x["time"][test].to_numpy(), risk)[0]
            print(f"| {name} | {n} | {c:.4f} |")


if __name__ == "__main__":
    main()
