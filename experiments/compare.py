"""Comparing saved models on the same patients: paired bootstrap C-index differences and subgroups.

``paired_c_index`` resamples patients once per bootstrap draw and scores every model on the same
resample, so the interval of a difference accounts for the models being evaluated on the same
patients (two separate intervals that overlap say little about the difference). It is written
here because neither scikit-survival nor lifelines offers a paired comparison of C-indices.

``clinfuse compare --models A B [...] --root <cohort> [--split test] [--by <tabular column>]``
scores each saved predictor on the folder (:meth:`Prognosis.predict_cohort`) and prints the
C-index of each with its 95% interval, each model's difference to the first one with its interval
and two-sided bootstrap p-value, and with ``--by`` the C-index of every model per subgroup.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clinfuse.experiments.metrics import harrell_c_index

#: a numeric ``--by`` column with more distinct values than this is cut into quartiles
MAX_LEVELS = 10


def paired_c_index(risks: Sequence[np.ndarray], time: np.ndarray, event: np.ndarray, n_boot: int = 1000,
                   alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Harrell C of every model, and of every model minus the first, with paired bootstrap intervals.

    Args:
        risks: one ``(n,)`` risk score per model (higher = earlier event), same patients in order.
        time, event: ``(n,)`` the patients' survival labels.
        n_boot: bootstrap resamples of the patients (the same resample for every model).
        alpha: 1 - confidence level.
        seed: the resampling seed.

    Returns:
        One row per model: ``c_index``, ``low``, ``high``, and ``delta``, ``delta_low``,
        ``delta_high``, ``p_value`` against model 0 (NaN for model 0 itself). The p-value is
        two-sided: twice the smaller share of resampled differences on either side of 0 (at least
        ``1 / n_boot``). Resamples where a C-index is undefined (no comparable pair) are skipped.

    Raises:
        ValueError: fewer than one model, arrays of different lengths, or no event.
    """
    time, event = np.asarray(time, float), np.asarray(event, float)
    scores = [np.asarray(r, float) for r in risks]
    if not scores:
        raise ValueError("paired_c_index needs at least one model's risks")
    bad = [k for k, r in enumerate(scores) if r.shape != time.shape]
    if bad or event.shape != time.shape:
        raise ValueError(f"risks of model(s) {bad} / event do not match time's shape {time.shape}")
    if not event.any():
        raise ValueError("no event among these patients: the C-index is undefined")
    estimate = np.array([harrell_c_index(r, time, event) for r in scores])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(time), len(time))
        c = np.array([harrell_c_index(r[rows], time[rows], event[rows]) for r in scores])
        if np.isfinite(c).all():
            draws.append(c)
    draws = np.asarray(draws).reshape(-1, len(scores))
    q = [alpha / 2, 1 - alpha / 2]
    rows = []
    for k in range(len(scores)):
        row = {"c_index": estimate[k], **dict(zip(("low", "high"), np.quantile(draws[:, k], q) if len(draws) else (np.nan,) * 2))}
        if k == 0:
            row.update(delta=np.nan, delta_low=np.nan, delta_high=np.nan, p_value=np.nan)
        else:
            d = draws[:, k] - draws[:, 0]
            low, high = np.quantile(d, q) if len(d) else (np.nan, np.nan)
            side = min((d <= 0).mean(), (d >= 0).mean()) if len(d) else np.nan
            row.update(delta=estimate[k] - estimate[0], delta_low=low, delta_high=high,
                       p_value=min(1.0, max(2 * side, 1 / max(len(d), 1))))
        rows.append(row)
    return pd.DataFrame(rows)


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


def by_subgroup(risks: Sequence[np.ndarray], names: Sequence[str], time: np.ndarray, event: np.ndarray,
                groups: pd.Series, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per subgroup: ``n``, ``events`` and every model's C-index with its bootstrap interval
    (``<name>`` and ``<name> 95% CI`` columns; NaN where a group has no comparable pair)."""
    out = []
    labels = np.asarray(groups)
    for g in sorted(set(labels)):
        rows = labels == g
        row = {"group": g, "n": int(rows.sum()), "events": int(np.asarray(event)[rows].sum())}
        if row["events"] and len(np.unique(np.asarray(time)[rows])) > 1:
            table = paired_c_index([np.asarray(r)[rows] for r in risks], np.asarray(time)[rows],
                                   np.asarray(event)[rows], n_boot=n_boot, seed=seed)
            for name, t in zip(names, table.itertuples()):
                row[name] = t.c_index
                row[f"{name} 95% CI"] = f"[{t.low:.3f}, {t.high:.3f}]"
        out.append(row)
    return pd.DataFrame(out)


def compare_main(argv: Sequence[str]) -> None:
    """``clinfuse compare``: several saved predictors on one cohort folder's labelled patients."""
    import argparse
    from pathlib import Path

    from clinfuse.datasets.reader import read_table
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
    if not {"time", "event"} <= set(base.columns):
        p.error(f"{root}: labels.parquet with time and event is needed to compare models")
    for m, f in zip(a.models, frames):
        if f["patient_id"].tolist() != base["patient_id"].tolist():
            p.error(f"{m} scored other patients than {a.models[0]}")
    names = [f"model {k}" for k in range(len(a.models))]
    time, event = base["time"].to_numpy(float), base["event"].to_numpy(float)
    risks = [f["risk"].to_numpy(float) for f in frames]
    table = paired_c_index(risks, time, event, n_boot=a.n_boot, seed=a.seed)
    print(f"{len(base)} patients, {int(event.sum())} events{f' (split {a.split})' if a.split else ''}; "
          f"95% paired bootstrap intervals over {a.n_boot} resamples")
    print("| model | C-index [95% CI] | difference to model 0 [95% CI] | p |\n|---|---|---|---|")
    for name, path, t in zip(names, a.models, table.itertuples()):
        diff = "-" if np.isnan(t.delta) else f"{t.delta:+.4f} [{t.delta_low:+.4f}, {t.delta_high:+.4f}]"
        p_text = "-" if np.isnan(t.p_value) else f"{t.p_value:.3g}"
        print(f"| {name}: {path} | {t.c_index:.4f} [{t.low:.4f}, {t.high:.4f}] | {diff} | {p_text} |")
    if a.by:
        tab_path = next((root / n for n in ("tabular.parquet", "tabular.csv") if (root / n).exists()), None)
        if tab_path is None:
            p.error(f"{root}: --by needs the folder's tabular file")
        tab = read_table(tab_path, ["patient_id", a.by]).set_index("patient_id")
        groups = subgroups(tab[a.by].reindex(base["patient_id"]))
        sub = by_subgroup(risks, names, time, event, groups, n_boot=min(a.n_boot, 200), seed=a.seed)
        print(f"\nC-index by {a.by} (95% bootstrap intervals, {min(a.n_boot, 200)} resamples):")
        print(_markdown(sub))


def _markdown(frame: pd.DataFrame) -> str:
    """A small markdown table (floats to 4 decimals, NaN as '-')."""
    def cell(v) -> str:
        if isinstance(v, float):
            return "-" if np.isnan(v) else f"{v:.4f}"
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
