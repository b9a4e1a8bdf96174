"""Metrics per subgroup of a covariate (``--by`` of ``clinfuse evaluate`` and ``clinfuse compare``).

A tabular column of the cohort folder splits the scored patients into groups: its values when it
has at most ``MAX_LEVELS`` distinct ones, else its quartiles; patients without a value form
``missing``. Each model's metric (Harrell C or AUROC) is computed per group with a bootstrap
interval; groups come in natural order, and an undefined metric is shown as ``-`` with a footnote.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from clinfuse.experiments.compare import markdown_table, paired_auroc, paired_c_index

#: a numeric ``--by`` column with more distinct values than this is cut into quartiles
MAX_LEVELS = 10
#: a subgroup with fewer patients gets no metric: a C-index or AUROC of 2-9 patients (e.g. 0.0 from
#: one discordant pair) reads like a finding, and its bootstrap interval is degenerate
MIN_GROUP_SIZE = 10
#: the footnote of a subgroup table holding an undefined metric (``-``), per metric
UNDEFINED_NOTE = {
    "events": (f"`-`: not reported in this subgroup: fewer than {MIN_GROUP_SIZE} patients, or too few events (the "
               "C-index needs a comparable pair, an event before another patient's time), or no bootstrap resample "
               "where it is defined (interval)."),
    "positives": (f"`-`: not reported in this subgroup: fewer than {MIN_GROUP_SIZE} patients, or one class only (the "
                  "AUROC needs positives and negatives), or no bootstrap resample with both classes (interval)."),
}


def check_group_column(root, column: str):
    """The folder's tabular file, once checked to hold ``column`` as a covariate to group by (only
    its header is read).

    Raises:
        ValueError: no folder ``root``, ``column`` is ``patient_id``, no tabular file in ``root``,
            or no such column (naming the file and its columns).
    """
    from pathlib import Path

    import pyarrow.parquet as pq

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"cohort folder {root} does not exist")
    if column == "patient_id":
        raise ValueError(f"cannot group by {column!r}: patient_id identifies patients, it is not a covariate")
    path = next((root / n for n in ("tabular.parquet", "tabular.csv") if (root / n).exists()), None)
    if path is None:
        raise ValueError(f"{root}: grouping by {column!r} needs the folder's tabular file (tabular.parquet or .csv)")
    try:
        columns = pq.read_schema(path).names if path.suffix == ".parquet" else pd.read_csv(path, nrows=0).columns.tolist()
    except Exception as err:  # pandas/pyarrow raise many types; name the file
        raise ValueError(f"{path}: cannot read table: {err}") from err
    covariates = [c for c in columns if c != "patient_id"]
    if column not in covariates:
        raise ValueError(f"{path}: no column {column!r} to group by; its columns: {covariates}")
    return path


def group_order(labels) -> list[str]:
    """The distinct subgroup labels in natural order: numeric labels by value, then the others
    with their digit runs compared as numbers (``s2`` before ``s11``, ``Q1`` ... ``Q4``), then
    ``"missing"``."""
    import re

    def key(g: str) -> tuple:
        if g == "missing":
            return (2, 0.0, ())
        try:
            value = float(g)
        except ValueError:
            value = np.nan
        if not np.isnan(value):
            return (0, value, ())
        return (1, 0.0, tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", g)))

    return sorted({str(g) for g in labels}, key=key)


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
        ValueError: ``column`` is ``patient_id``, no tabular file in ``root``, or no such column
            (:func:`check_group_column`).
    """
    from clinfuse.datasets.reader import read_table

    path = check_group_column(root, column)
    table = read_table(path, ["patient_id", column]).set_index("patient_id")
    return subgroups(table[column].reindex(list(patient_ids)))


def by_subgroup(scores: Sequence[np.ndarray], names: Sequence[str], labels: dict[str, np.ndarray],
                groups: pd.Series, n_boot: int = 200, seed: int = 0, min_size: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """Per subgroup, in :func:`group_order`: ``n``, the label counts (``events`` or ``positives``)
    and every model's metric with its bootstrap interval (``<name>`` and ``<name> 95% CI``
    columns; NaN / None where the metric or its interval is undefined in the group, or the group
    has fewer than ``min_size`` patients). ``labels``: ``{"time", "event"}`` (Harrell C) or
    ``{"binary"}`` (AUROC)."""
    out = []
    group = np.asarray(groups).astype(str)
    survival = "time" in labels
    for g in group_order(group):
        rows = group == g
        lab = {k: np.asarray(v)[rows] for k, v in labels.items()}
        count = lab["event"] if survival else lab["binary"]
        row = {"group": g, "n": int(rows.sum()), ("events" if survival else "positives"): int(count.sum())}
        try:
            if rows.sum() < min_size:
                raise ValueError(f"fewer than {min_size} patients")
            part = [np.asarray(r)[rows] for r in scores]
            table = (paired_c_index(part, lab["time"], lab["event"], n_boot=n_boot, seed=seed) if survival
                     else paired_auroc(part, lab["binary"], n_boot=n_boot, seed=seed))
        except ValueError:  # too small, no event or one class in this group
            out.append({**row, **{k: v for name in names for k, v in ((name, np.nan), (f"{name} 95% CI", None))}})
            continue
        metric = table.columns[0]
        for name, t in zip(names, table.to_dict("records")):
            defined = np.isfinite(t[metric])  # NaN: e.g. no comparable pair among the group's patients
            row[name] = t[metric] if defined else np.nan
            ok = defined and np.isfinite([t["low"], t["high"]]).all()
            row[f"{name} 95% CI"] = f"[{t['low']:.3f}, {t['high']:.3f}]" if ok else None
        out.append(row)
    return pd.DataFrame(out)


def subgroup_markdown(table: pd.DataFrame) -> str:
    """:func:`markdown_table` of a :func:`by_subgroup` table, with the :data:`UNDEFINED_NOTE`
    footnote when a metric or interval is undefined (``-``)."""
    text = markdown_table(table)
    undefined = table.drop(columns=["group"]).isna().any().any()
    note = UNDEFINED_NOTE["events" if "events" in table.columns else "positives"]
    return f"{text}\n\n{note}" if undefined else text
