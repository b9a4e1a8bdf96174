"""Comparing saved models on the same patients: paired bootstrap C-index differences and subgroups.

``paired_c_index`` (survival) and ``paired_auroc`` (binary) resample patients once per bootstrap
draw and score every model on the same resample, so the interval of a difference accounts for the
models being evaluated on the same patients (two separate intervals that overlap say little about
the difference). Written here because neither scikit-survival, lifelines nor scikit-learn offers
a paired comparison of these metrics.

``clinfuse compare --models A B [...] --root <cohort> [--split test] [--by <tabular column>]``
scores each saved predictor on the folder (:meth:`Prognosis.predict_cohort`) and prints the
C-index (AUROC for binary models) of each with its 95% interval, each model's difference to the
first one with its interval and two-sided bootstrap p-value, and with ``--by`` every model's
metric per subgroup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from clinfuse.experiments.metrics import harrell_c_index

#: a numeric ``--by`` column with more distinct values than this is cut into quartiles
MAX_LEVELS = 10


def paired_bootstrap(metric: Callable[..., float], scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """``metric(score, *labels)`` of every model, and of every model minus the first, with paired
    bootstrap intervals: each resample of the patients scores every model.

    Returns:
        One row per model: ``estimate``, ``low``, ``high``, and ``delta``, ``delta_low``,
        ``delta_high``, ``p_value`` against model 0 (NaN for model 0 itself). The p-value is
        two-sided: twice the smaller share of resampled differences on either side of 0 (at least
        ``1 / n_boot``). Resamples where a metric is undefined (NaN or ValueError) are skipped.
    """
    scores = [np.asarray(r, float) for r in scores]
    labels = [np.asarray(a, float) for a in labels]
    n = len(labels[0])
    bad = [k for k, r in enumerate(scores) if r.shape != (n,)]
    if not scores or bad or any(a.shape != (n,) for a in labels):
        raise ValueError(f"scores of model(s) {bad} / labels do not have one value per patient ({n})")
    estimate = np.array([metric(r, *labels) for r in scores])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        try:
            values = np.array([metric(r[rows], *(a[rows] for a in labels)) for r in scores])
        except ValueError:
            continue
        if np.isfinite(values).all():
            draws.append(values)
    draws = np.asarray(draws).reshape(-1, len(scores))
    q = [alpha / 2, 1 - alpha / 2]
    out = []
    for k in range(len(scores)):
        low, high = np.quantile(draws[:, k], q) if len(draws) else (np.nan, np.nan)
        row = {"estimate": estimate[k], "low": low, "high": high}
        if k == 0:
            row.update(delta=np.nan, delta_low=np.nan, delta_high=np.nan, p_value=np.nan)
        else:
            d = draws[:, k] - draws[:, 0]
            d_low, d_high = np.quantile(d, q) if len(d) else (np.nan, np.nan)
            side = min((d <= 0).mean(), (d >= 0).mean()) if len(d) else np.nan
            row.update(delta=estimate[k] - estimate[0], delta_low=d_low, delta_high=d_high,
                       p_value=min(1.0, max(2 * side, 1 / max(len(d), 1))))
        out.append(row)
    return pd.DataFrame(out)


def paired_c_index(risks: Sequence[np.ndarray], time: np.ndarray, event: np.ndarray, n_boot: int = 1000,
                   alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Harrell C of every model (risk: higher = earlier event) and its difference to the first
    model, paired bootstrap (:func:`paired_bootstrap`; the ``estimate`` column is ``c_index``).

    Raises:
        ValueError: no model, arrays of different lengths, or no event.
    """
    if not np.asarray(event, float).any():
        raise ValueError("no event among these patients: the C-index is undefined")
    table = paired_bootstrap(lambda r, t, e: harrell_c_index(r, t, e), risks, (time, event), n_boot, alpha, seed)
    return table.rename(columns={"estimate": "c_index"})


def paired_auroc(probabilities: Sequence[np.ndarray], target: np.ndarray, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """AUROC (scikit-learn) of every binary model and its difference to the first, paired
    bootstrap (:func:`paired_bootstrap`; the ``estimate`` column is ``auroc``).

    Raises:
        ValueError: arrays of different lengths, or only one class among the patients.
    """
    from sklearn.metrics import roc_auc_score

    if len(np.unique(np.asarray(target))) < 2:
        raise ValueError("only one class among these patients: the AUROC is undefined")
    table = paired_bootstrap(lambda p, y: roc_auc_score(y, p), probabilities, (target,), n_boot, alpha, seed)
    return table.rename(columns={"estimate": "auroc"})


def subgroups(values: pd.Series) -> pd.Series:
    """Group labels of a covariate: its values when it has at most ``MAX_LEVELS`` distinct ones
    (missing = ``"missing"``), else its quartiles (``Q1 [lo, hi]``, ...)."""
    present = values.dropna()
    if pd.api.types.is_numeric_dtype(values) and present.nunique() > MAX_LEVELS:
        quartile = pd.qcut(present, 4, labels=False, duplicates="drop")
        edges = present.groupby(quartile).agg(["min", "max"])
        names = {q: f"Q{q + 1} [{lo:.4g}, {hi:.4g}]" for q, (lo, hi) in edges.iterrows()}
        labels = quartile.map(names)
    else:
        labels = present.astype(str)
    return labels.reindex(values.index).fillna("missing")


def tabular_groups(root, column: str, patient_ids: Sequence[str]) -> pd.Series:
    """Subgroup labels (:func:`subgroups`) of ``column`` of the folder's tabular file, one per
    patient in ``patient_ids`` order (patients without a tabular row: ``"missing"``).

    Raises:
        ValueError: no tabular file in ``root``, or no such column (naming the file).
    """
    from pathlib import Path

    from clinfuse.datasets.reader import read_table

    root = Path(root)
    path = next((root / n for n in ("tabular.parquet", "tabular.csv") if (root / n).exists()), None)
    if path is None:
        raise ValueError(f"{root}: grouping by {column!r} needs the folder's tabular file")
    table = read_table(path, ["patient_id", column]).set_index("patient_id")
    return subgroups(table[column].reindex(list(patient_ids)))


def by_subgroup(scores: Sequence[np.ndarray], names: Sequence[str], labels: dict[str, np.ndarray],
                groups: pd.Series, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per subgroup: ``n``, the label counts (``events`` or ``positives``) and every model's metric
    with its bootstrap interval (``<name>`` and ``<name> 95% CI`` columns; missing where the
    metric is undefined in the group). ``labels``: ``{"time", "event"}`` (Harrell C) or
    ``{"binary"}`` (AUROC)."""
    out = []
    group = np.asarray(groups)
    survival = "time" in labels
    for g in sorted(set(group)):
        rows = group == g
        lab = {k: np.asarray(v)[rows] for k, v in labels.items()}
        count = lab["event"] if survival else lab["binary"]
        row = {"group": g, "n": int(rows.sum()), ("events" if survival else "positives"): int(count.sum())}
        try:
            part = [np.asarray(r)[rows] for r in scores]
            table = (paired_c_index(part, lab["time"], lab["event"], n_boot=n_boot, seed=seed) if survival
                     else paired_auroc(part, lab["binary"], n_boot=n_boot, seed=seed))
        except ValueError:  # no event / one class in this group
            out.append(row)
            continue
        metric = table.columns[0]
        for name, t in zip(names, table.to_dict("records")):
            row[name] = t[metric]
            row[f"{name} 95% CI"] = f"[{t['low']:.3f}, {t['high']:.3f}]"
        out.append(row)
    return pd.DataFrame(out)


def compare_main(argv: Sequence[str]) -> None:
    """``clinfuse compare``: several saved predictors on one cohort folder's labelled patients."""
    import argparse
    from pathlib import Path

    from clinfuse.experiments.prognosis import Prognosis

    p = argparse.ArgumentParser(prog="clinfuse compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="predictor folders or MLflow model URIs; the first is the reference")
    p.add_argument("--root", required=True, help="a cohort folder with labels.parquet (time, event)")
    p.add_argument("--split", default=None, help="only this split of splits.csv (e.g. test)")
    p.add_argument("--by", default=None, help="a column of the folder's tabular file: C-index per subgroup")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(list(argv))
    root = Path(a.root)
    frames = [Prognosis.load(m).predict_cohort(root, split=a.split, contributions=False, show_progress=False)
              for m in a.models]
    base = frames[0]
    for m, f in zip(a.models, frames):
        if f["patient_id"].tolist() != base["patient_id"].tolist():
            p.error(f"{m} scored other patients than {a.models[0]}")
    survival = all("median_survival" in f.columns for f in frames)
    binary = all("probability" in f.columns for f in frames)
    if survival and {"time", "event"} <= set(base.columns):
        labels = {"time": base["time"].to_numpy(float), "event": base["event"].to_numpy(float)}
        scores, metric, count = [f["risk"].to_numpy(float) for f in frames], "C-index", "events"
        table = paired_c_index(scores, labels["time"], labels["event"], n_boot=a.n_boot, seed=a.seed)
    elif binary and "binary" in base.columns:
        labels = {"binary": base["binary"].to_numpy(float)}
        scores, metric, count = [f["probability"].to_numpy(float) for f in frames], "AUROC", "positives"
        table = paired_auroc(scores, labels["binary"], n_boot=a.n_boot, seed=a.seed)
    else:
        p.error("the models must all be survival models (with time/event labels in the folder) or all "
                "binary models (with a binary label)")
    names = [f"model {k}" for k in range(len(a.models))]
    n_count = int(labels["event" if survival else "binary"].sum())
    print(f"{len(base)} patients, {n_count} {count}{f' (split {a.split})' if a.split else ''}; "
          f"95% paired bootstrap intervals over {a.n_boot} resamples")
    print(f"| model | {metric} [95% CI] | difference to model 0 [95% CI] | p |\n|---|---|---|---|")
    for name, path, t in zip(names, a.models, table.to_dict("records")):
        diff = "-" if np.isnan(t["delta"]) else f"{t['delta']:+.4f} [{t['delta_low']:+.4f}, {t['delta_high']:+.4f}]"
        p_text = "-" if np.isnan(t["p_value"]) else f"{t['p_value']:.3g}"
        print(f"| {name}: {path} | {t[table.columns[0]]:.4f} [{t['low']:.4f}, {t['high']:.4f}] | {diff} | {p_text} |")
    if a.by:
        groups = tabular_groups(root, a.by, base["patient_id"])
        sub = by_subgroup(scores, names, labels, groups, n_boot=min(a.n_boot, 200), seed=a.seed)
        print(f"\n{metric} by {a.by} (95% bootstrap intervals, {min(a.n_boot, 200)} resamples):")
        print(markdown_table(sub))


def markdown_table(frame: pd.DataFrame) -> str:
    """A small markdown table (floats to 4 decimals, NaN as '-')."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "-" if np.isnan(v) else f"{v:.4f}"
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
