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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohort-dir", required=True, help="a synthetic cohort folder (clinfuse synth)")
    p.add_argument("--train-sizes", default="720,1200,6000",
                   help="comma-separated: fit on the first n training patients (capped at the split)")
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
    for interactions in (False, True):
        x = features(table, train, interactions)
        x["time"], x["event"] = table["time"], table["event"].astype(bool)
        for n in sorted({min(int(s), int(train.sum())) for s in a.train_sizes.split(",")}):
            cox = CoxPHFitter(penalizer=0.01).fit(x[train].iloc[:n], "time", "event")
            risk = cox.predict_partial_hazard(x[test]).to_numpy()
            c = concordance_index_censored(x["event"][test].to_numpy(), x["time"][test].to_numpy(), risk)[0]
            print(f"| {'+ interactions' if interactions else 'plain'} | {n} | {c:.4f} |")


if __name__ == "__main__":
    main()
