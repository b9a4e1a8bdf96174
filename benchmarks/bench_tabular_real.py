"""The tabular encoders on real survival cohorts: scikit-survival's bundled data sets, K-fold CV.

    python benchmarks/bench_tabular_real.py [--cohorts flchain gbsg2 whas500] [--folds 5]
        [--split-seeds 0] [--seeds 0,1,2,3,4] [--epochs 8] [--encoders TabularMLPEncoder FTTransformerEncoder]
        [--variant CLASS:KEY=VALUE,...] [--references cox rsf] [--out rows.csv]

The synthetic cohort's table is a noisy linear rendering of the latent state, so a one-layer MLP
reads nearly all of it (``docs/benchmarks/encoders.md``); these cohorts are real
(``clinfuse.datasets.builtin_tabular``: flchain 7,874 people, gbsg2 686, whas500 500). For each
cohort, split seed and fold (``builtin_cohort(name, fold=k, n_folds=--folds, seed=split seed)``:
stratified by event, fold ``k`` is test, 15 % of the rest val), each encoder is trained as in
``bench_encoders.py`` (``train_one``: a single-modality survival model, d_model 64, transformer
fusion, Cox loss, AdamW, best ``val/c_index`` checkpoint, a fresh process per run) for every
training seed and scored on the test fold (Harrell's C). References on the same folds, fitted on
train + val: lifelines ``CoxPHFitter(penalizer=0.01)`` and scikit-survival
``RandomSurvivalForest(n_estimators=100, min_samples_leaf=15)``, both on the numeric columns
z-scored (a blank value 0 plus a missing flag) and one-hot categorical columns (first level dropped).

Tables: per cohort, each encoder's C-index (mean over folds of the seed mean, sd over folds) and
the references; then every alternative against the default (``TabularMLPEncoder``) per fold (paired
bootstrap over the fold's test patients with the training seeds' spread added, as
``bench_encoders.py``), pooled over the folds (fixed and random effects: ``pool_draws``), and the
corrected resampled t of the per-fold differences (:func:`clinfuse.experiments.compare.corrected_resampled_t`),
which also counts that the folds' models were trained on overlapping patients.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encoders import (  # noqa: E402 - the sibling benchmark's training run and statistics
    LR_KEY,
    PRELOAD,
    _in_fresh_process,
    _mean_sd,
    parse_variant,
    pool_draws,
    read_rows,
    test_labels,
    variant_name,
)

COHORTS = ("flchain", "gbsg2", "whas500")
DEFAULT = "TabularMLPEncoder"
FIELDS = ["cohort", "split_seed", "fold", "modality", "encoder", "seed", "test_c_index", "best_val_c_index", "fit_s",
          "train_pps", "peak_rss_mb", "n_params", "error", "test_risks"]


def design(root: Path):  # noqa: ANN201 - (DataFrame, train+val ids, test ids, labels)
    """The references' design matrix of one cohort folder: numeric columns z-scored on the fitting
    patients (blank = 0, with a ``<col>_missing`` flag where any value is blank), categorical
    columns one-hot without their first level (the reference; a blank is read as it): with every
    level the columns sum to 1 and a rare level (flchain's late sample years) made lifelines'
    Newton steps diverge on one fold (C 0.43)."""
    import pandas as pd

    table = pd.read_parquet(root / "tabular.parquet").set_index("patient_id")
    splits = pd.read_csv(root / "splits.csv", dtype={"patient_id": str}).set_index("patient_id")["split"]
    labels = pd.read_parquet(root / "labels.parquet").set_index("patient_id")
    fit_ids = splits.index[splits != "test"].tolist()
    test_ids = splits.index[splits == "test"].tolist()
    numeric = table.select_dtypes("number")
    parts = []
    for col in numeric.columns:
        x = numeric[col]
        mean, sd = x.loc[fit_ids].mean(), x.loc[fit_ids].std(ddof=0)
        parts.append(((x - mean) / (sd if sd > 0 else 1.0)).fillna(0.0).rename(col))
        if x.isna().any():
            parts.append(x.isna().astype(float).rename(f"{col}_missing"))
    categorical = table.drop(columns=numeric.columns)
    if len(categorical.columns):
        parts.append(pd.get_dummies(categorical.astype(object), drop_first=True, dtype=float))
    return pd.concat(parts, axis=1), fit_ids, test_ids, labels


def reference_c_index(root: Path, which: list[str]) -> dict[str, float]:
    """Test-fold Harrell C of the Cox and random-survival-forest references (module docstring)."""
    from lifelines import CoxPHFitter
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    x, fit_ids, test_ids, labels = design(root)
    t, e = labels.loc[test_ids, "time"].to_numpy(), labels.loc[test_ids, "event"].to_numpy().astype(bool)
    out = {}
    if "cox" in which:
        train = x.loc[fit_ids].assign(time=labels.loc[fit_ids, "time"], event=labels.loc[fit_ids, "event"])
        cox = CoxPHFitter(penalizer=0.01).fit(train, duration_col="time", event_col="event")
        out["cox"] = float(concordance_index_censored(e, t, cox.predict_partial_hazard(x.loc[test_ids]).to_numpy().ravel())[0])
    if "rsf" in which:
        y = Surv.from_arrays(labels.loc[fit_ids, "event"].astype(bool), labels.loc[fit_ids, "time"])
        rsf = RandomSurvivalForest(n_estimators=100, min_samples_leaf=15, random_state=0, n_jobs=2)
        rsf.fit(x.loc[fit_ids].to_numpy(), y)
        out["rsf"] = float(concordance_index_censored(e, t, rsf.predict(x.loc[test_ids].to_numpy()))[0])
    return out


def summarize(rows: list[dict], refs: dict[tuple, dict[str, float]], roots: dict[tuple, Path], default: str) -> str:
    """Per cohort: the encoders and references, then each alternative against ``default`` by fold,
    pooled, and with the corrected resampled t (module docstring)."""
    import pandas as pd

    from clinfuse.experiments.compare import corrected_resampled_t

    ok = [r for r in rows if not r["error"]]
    runs_of: dict[tuple, list[dict]] = {}  # (cohort, split seed, fold) -> its successful runs
    for r in ok:
        runs_of.setdefault((r["cohort"], r["split_seed"], r["fold"]), []).append(r)
    lines = []
    for cohort in dict.fromkeys(r["cohort"] for r in rows):
        keys = [k for k in roots if k[0] == cohort]  # (cohort, split seed, fold)
        encoders = list(dict.fromkeys(r["encoder"] for r in rows if r["cohort"] == cohort))
        seeds = sorted({r["seed"] for r in ok if r["cohort"] == cohort})
        lines += [f"\n{cohort}: {len(keys)} test folds, training seeds {seeds}\n",
                  "| model | test C-index (mean over folds ± sd) | train patients/s | params | failed runs |",
                  "|---|---|---|---|---|"]
        fold_means: dict[str, dict[tuple, float]] = {}
        for enc in encoders:
            runs = [r for r in rows if r["cohort"] == cohort and r["encoder"] == enc]
            good = [r for r in runs if not r["error"]]
            per_fold = {k: float(np.mean(cs)) for k in keys
                        if (cs := [r["test_c_index"] for r in runs_of.get(k, []) if r["encoder"] == enc])}
            fold_means[enc] = per_fold
            m, sd = _mean_sd(list(per_fold.values()))
            pps = np.mean([r["train_pps"] for r in good]) if good else float("nan")
            params = f"{int(good[0]['n_params']):,}" if good else "-"
            name = f"{enc} (default)" if enc == default else enc
            lines.append(f"| {name} | {m:.4f} ± {sd:.4f} | {pps:.0f} | {params} | {len(runs) - len(good)}/{len(runs)} |")
        for ref in ("cox", "rsf"):
            vals = [refs[k][ref] for k in keys if ref in refs.get(k, {})]
            if vals:
                m, sd = _mean_sd(vals)
                label = "Cox (lifelines, penalizer 0.01)" if ref == "cox" else "random survival forest (sksurv)"
                lines.append(f"| {label} | {m:.4f} ± {sd:.4f} | - | - | - |")
        if default not in fold_means:
            continue
        draws = [(f"split {k[1]} fold {k[2]}", runs_of.get(k, []), test_labels(roots[k])) for k in keys]
        lines.append(pool_draws(draws, {"tabular": default}))
        splits = pd.read_csv(roots[keys[0]] / "splits.csv")["split"]
        n_test, n_train = int((splits == "test").sum()), int((splits == "train").sum())
        for enc in encoders:
            common = [k for k in keys if k in fold_means[enc] and k in fold_means[default]]
            if enc == default or len(common) < 2:
                continue
            st = corrected_resampled_t([fold_means[enc][k] - fold_means[default][k] for k in common], n_train, n_test)
            ahead = sum(fold_means[enc][k] > fold_means[default][k] for k in common)
            lines.append(f"\n{enc} vs {default}, corrected resampled t over {len(common)} folds (train {n_train}, "
                         f"test {n_test} per fold): {st['delta']:+.4f}, 95% CI [{st['low']:+.4f}, {st['high']:+.4f}], "
                         f"p {st['p_value']:.3f}; ahead on {ahead} of {len(common)} folds")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=COHORTS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--split-seeds", default="0", help="comma-separated seeds of the K-fold split (repeated CV)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated training seeds")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per run")
    p.add_argument("--encoders", nargs="+", default=[DEFAULT, "FTTransformerEncoder"])
    p.add_argument("--variant", action="append", default=[], metavar="CLASS:KEY=VALUE,...",
                   help="also run a tabular encoder with these init arguments (repeatable)")
    p.add_argument("--references", nargs="*", default=["cox", "rsf"], choices=("cox", "rsf"))
    p.add_argument("--cohort-root", default=None, help="folder for the fold cohorts (default: a temporary one)")
    p.add_argument("--out", default=None, help="CSV of the per-run rows (with test risks)")
    p.add_argument("--table-from", default=None, metavar="CSV",
                   help="print the tables of an --out CSV (the fold cohorts are rewritten under --cohort-root); no training")
    a = p.parse_args()
    if a.folds < 2:
        p.error("--folds must be >= 2")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
        split_seeds = [int(s) for s in a.split_seeds.split(",") if s.strip()]
        variants = [parse_variant(v) for v in a.variant]
    except ValueError as err:
        p.error(str(err))

    from clinfuse.datasets.builtin_tabular import builtin_cohort
    from clinfuse.encoders.registry import ENCODER_CLASSES

    names = list(a.encoders) + [variant_name(n, kw) for n, kw in variants]
    bad = [n for n in names if parse_variant(n)[0] not in ENCODER_CLASSES
           or ENCODER_CLASSES[parse_variant(n)[0]].modality != "tabular"]
    if bad:
        p.error(f"not tabular encoders: {bad}; known: {sorted(n for n, c in ENCODER_CLASSES.items() if c.modality == 'tabular')}")
    if DEFAULT not in names:
        p.error(f"--encoders must include the default {DEFAULT} (every alternative is compared with it)")
    base = Path(a.cohort_root) if a.cohort_root else Path(tempfile.mkdtemp(prefix="clinfuse-tabular-real-"))

    def fold_root(cohort: str, split_seed: int, fold: int) -> Path:
        return builtin_cohort(cohort, base / f"{cohort}-s{split_seed}-f{fold}of{a.folds}", fold=fold, n_folds=a.folds,
                              seed=split_seed)

    if a.table_from:  # the folds are deterministic in (cohort, split seed, fold, --folds): rebuilt, not trained
        rows = read_rows(a.table_from)
        keys = list(dict.fromkeys((r["cohort"], int(r["split_seed"]), int(r["fold"])) for r in rows))
        if any(k[2] >= a.folds for k in keys):
            p.error(f"{a.table_from} has folds beyond --folds {a.folds}: pass the --folds it was run with")
        roots = {k: fold_root(*k) for k in keys}
        refs = {k: reference_c_index(roots[k], a.references) for k in keys} if a.references else {}
        print(summarize(rows, refs, roots, DEFAULT))
        return
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    if a.out:
        with open(a.out, "w", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()
    rows, refs, roots = [], {}, {}
    total = len(a.cohorts) * len(split_seeds) * a.folds * len(names) * len(seeds)
    t_all = time.perf_counter()
    for cohort in a.cohorts:
        for split_seed in split_seeds:
            for fold in range(a.folds):
                key = (cohort, split_seed, fold)
                roots[key] = root = fold_root(cohort, split_seed, fold)
                if a.references:
                    refs[key] = reference_c_index(root, a.references)
                for enc in names:
                    for seed in seeds:
                        r = _in_fresh_process(ctx, str(root), "tabular", enc, {LR_KEY: a.lr}, seed, a.epochs,
                                              a.batch_size, a.threads)
                        r.update(cohort=cohort, split_seed=split_seed, fold=fold)
                        rows.append(r)
                        if a.out:
                            with open(a.out, "a", newline="") as f:
                                csv.DictWriter(f, fieldnames=FIELDS, restval="").writerow(r)
                        where = f"[{len(rows)}/{total}] {cohort} split {split_seed} fold {fold} {enc} seed {seed}"
                        msg = (f"FAILED:\n{r['error']}" if r["error"] else
                               f"test C {r['test_c_index']:.4f}, fit {r['fit_s']:.0f} s "
                               f"[{time.perf_counter() - t_all:.0f} s so far]")
                        print(f"{where} {msg}", file=sys.stderr, flush=True)
    print(f"\nTabular encoders on scikit-survival cohorts: {a.folds}-fold CV, split seeds {split_seeds}, training "
          f"seeds {seeds}, {a.epochs} epochs, batch size {a.batch_size}, AdamW lr {a.lr:g}, d_model 64, "
          f"TransformerFusion, Cox loss, best val/c_index checkpoint; {a.threads} torch threads; total "
          f"{time.perf_counter() - t_all:.0f} s.")
    print(summarize(rows, refs, roots, DEFAULT))


if __name__ == "__main__":
    main()
