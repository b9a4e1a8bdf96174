"""Comparing saved models on the same patients: paired bootstrap C-index differences and subgroups.

``paired_c_index`` (survival) and ``paired_auroc`` (binary) resample patients once per bootstrap
draw and score every model on the same resample, so the interval of a difference accounts for the
models being evaluated on the same patients (two separate intervals that overlap say little about
the difference). Written here because neither scikit-survival, lifelines nor scikit-learn offers
a paired comparison of these metrics. ``seed_and_patient_interval`` widens such an interval by the
training seeds' spread, for designs trained with several seeds each (``benchmarks/bench_encoders.py``).

``clinfuse compare --models A B [...] --root <cohort> [--split test] [--by <tabular column>]``
scores each saved predictor on the folder (:meth:`Prognosis.predict_cohort`) and prints the
C-index (AUROC for binary models) of each with its 95% interval, each model's difference to the
first one with its interval and two-sided bootstrap p-value, and with ``--by`` every model's
metric per subgroup (in natural order: numeric values and quartiles by value, ``missing`` last;
``-`` where the metric is undefined, with a footnote saying why). ``--by``, the models' tasks and
the folder's labels are checked before any model scores the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from clinfuse.experiments.metrics import harrell_c_index

#: the fewest bootstrap resamples ``--n-boot`` accepts: quantiles of fewer are no interval
MIN_BOOT = 20


def paired_bootstrap(metric: Callable[..., float], scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """``metric(score, *labels)`` of every model, and of every model minus the first, with paired
    bootstrap intervals: each resample of the patients scores every model.

    A model's scores may be one array ``(n,)`` or several ``(k, n)`` (say, one per training seed):
    its metric is then the mean of the ``k`` metrics, on the same resample.

    Returns:
        One row per model: ``estimate``, ``low``, ``high``, and ``delta``, ``delta_low``,
        ``delta_high``, ``delta_se`` (the resampled differences' sd), ``p_value`` against model 0
        (NaN for model 0 itself). The p-value is
        two-sided: twice the smaller share of resampled differences on either side of 0 (at least
        ``1 / n_boot``). Resamples where a metric is undefined (NaN or ValueError) are skipped.
    """
    scores, labels, n = _checked(scores, labels)

    def score(r: np.ndarray, rows: np.ndarray | slice) -> float:
        return float(np.mean([metric(x[rows], *(a[rows] for a in labels)) for x in r]))

    estimate = np.array([score(r, slice(None)) for r in scores])
    draws = []
    for rows in _resamples(n, n_boot, seed):
        try:
            values = np.array([score(r, rows) for r in scores])
        except ValueError:
            continue
        if np.isfinite(values).all():
            draws.append(values)
    return _summary(estimate, np.asarray(draws).reshape(-1, len(scores)), alpha)


def _checked(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Scores as ``(k, n)`` float arrays and labels as ``(n,)`` float arrays; ValueError otherwise."""
    scores = [np.atleast_2d(np.asarray(r, float)) for r in scores]  # (k, n) per model
    labels = [np.asarray(a, float) for a in labels]
    n = len(labels[0])
    bad = [k for k, r in enumerate(scores) if r.ndim != 2 or r.shape[1] != n or r.shape[0] == 0]
    if not scores or bad or any(a.shape != (n,) for a in labels):
        raise ValueError(f"scores of model(s) {bad} / labels do not have one value per patient ({n})")
    return scores, labels, n


def _resamples(n: int, n_boot: int, seed: int):
    """The bootstrap resamples' row indices, ``(n,)`` each, in a fixed order for ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n, n)


def _summary(estimate: np.ndarray, draws: np.ndarray, alpha: float) -> pd.DataFrame:
    """:func:`paired_bootstrap`'s table from the estimates ``(models,)`` and the defined resamples'
    metrics ``(draws, models)``."""
    q = [alpha / 2, 1 - alpha / 2]
    out = []
    for k in range(len(estimate)):
        low, high = np.quantile(draws[:, k], q) if len(draws) else (np.nan, np.nan)
        row = {"estimate": estimate[k], "low": low, "high": high}
        if k == 0:
            row.update(delta=np.nan, delta_low=np.nan, delta_high=np.nan, delta_se=np.nan, p_value=np.nan)
        else:
            d = draws[:, k] - draws[:, 0]
            d_low, d_high = np.quantile(d, q) if len(d) else (np.nan, np.nan)
            side = min((d <= 0).mean(), (d >= 0).mean()) if len(d) else np.nan
            row.update(delta=estimate[k] - estimate[0], delta_low=d_low, delta_high=d_high,
                       delta_se=float(np.std(d, ddof=1)) if len(d) > 1 else np.nan,
                       p_value=min(1.0, max(2 * side, 1 / max(len(d), 1))))
        out.append(row)
    return pd.DataFrame(out)


def seed_and_patient_interval(patient_se: float, seed_deltas: Sequence[float], alpha: float = 0.05) -> dict[str, float]:
    """Interval of a seed-averaged difference between two trained designs with both of its sources
    of uncertainty: which test patients were drawn, and which training seeds.

    A paired bootstrap over the test patients with the trained models held fixed (``delta_se`` of
    :func:`paired_c_index`) leaves out the training randomness: with three seeds per design a lead
    can be one lucky seed, on the same test patients every resample. The spread of the per-seed
    differences ``d_s`` on the fixed test split measures that part. The two variances add:
    ``se^2 = patient_se^2 + var(d_s) / k``, and the interval is Student's t with Welch-Satterthwaite
    degrees of freedom ``se^4 (k - 1) / (var(d_s) / k)^2`` (the bootstrap part counted as known):
    near a normal interval when the patients dominate, wide when the few seeds do.

    Args:
        patient_se: sd of the seed-averaged difference over test-patient resamples.
        seed_deltas: ``d_s``, the designs' metric difference of each training seed on the whole test
            split (seed ``s`` of one design paired with seed ``s`` of the other); their mean is the
            estimate.
        alpha: 1 - coverage.

    Returns:
        ``delta`` (mean of ``d_s``), ``se``, ``df``, ``low``, ``high`` and the two-sided ``p_value``
        of ``delta = 0``; ``low``/``high``/``p_value`` are NaN with fewer than two seeds (the seed
        part cannot be estimated).
    """
    from scipy import stats

    d = np.asarray(seed_deltas, dtype=float)
    if d.ndim != 1 or not len(d) or not np.isfinite(d).all() or not np.isfinite(patient_se) or patient_se < 0:
        raise ValueError(f"seed_deltas must be finite numbers and patient_se a finite sd >= 0, got {d!r}, {patient_se!r}")
    k, delta = len(d), float(d.mean())
    if k < 2:
        return {"delta": delta, "se": np.nan, "df": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan}
    seed_var = float(d.var(ddof=1)) / k
    se = float(np.sqrt(patient_se**2 + seed_var))
    df = np.inf if seed_var == 0 else se**4 * (k - 1) / seed_var**2
    if se == 0:
        return {"delta": delta, "se": 0.0, "df": df, "low": delta, "high": delta, "p_value": 1.0 if delta == 0 else 0.0}
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return {"delta": delta, "se": se, "df": df, "low": delta - half, "high": delta + half,
            "p_value": float(2 * stats.t.sf(abs(delta) / se, df))}


def corrected_resampled_t(deltas: Sequence[float], n_train: int, n_test: int, alpha: float = 0.05) -> dict[str, float]:
    """Interval of a mean difference over cross-validation folds whose training sets overlap.

    The folds' estimates ``d_j`` (one per test fold, of one or several repeats of K-fold) are not
    independent: any two folds train on mostly the same patients, so ``var(d) / J`` is too small.
    Nadeau and Bengio ("Inference for the generalization error", Machine Learning 2003) correct the
    variance of the mean to ``(1 / J + n_test / n_train) var(d)``, with Student's t on ``J - 1``
    degrees of freedom (the "corrected resampled t-test"; Bouckaert and Frank, PAKDD 2004, for
    repeated K-fold). Written here because neither scipy nor statsmodels has it.

    Args:
        deltas: ``d_j``, the difference on each test fold (e.g. averaged over training seeds).
        n_train: patients a fold's models were trained on.
        n_test: patients a fold was tested on.
        alpha: 1 - coverage.

    Returns:
        ``delta`` (mean of ``d_j``), ``se``, ``df``, ``low``, ``high``, two-sided ``p_value``;
        ``se``, ``low``, ``high``, ``p_value`` are NaN with fewer than two folds.
    """
    from scipy import stats

    d = np.asarray(deltas, dtype=float)
    if d.ndim != 1 or not len(d) or not np.isfinite(d).all():
        raise ValueError(f"deltas must be a non-empty 1-D array of finite numbers, got {d!r}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    j, delta = len(d), float(d.mean())
    if j < 2:
        return {"delta": delta, "se": np.nan, "df": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan}
    se = float(np.sqrt((1 / j + n_test / n_train) * d.var(ddof=1)))
    df = j - 1
    if se == 0:
        return {"delta": delta, "se": 0.0, "df": df, "low": delta, "high": delta, "p_value": 1.0 if delta == 0 else 0.0}
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return {"delta": delta, "se": se, "df": df, "low": delta - half, "high": delta + half,
            "p_value": float(2 * stats.t.sf(abs(delta) / se, df))}


def paired_c_index(risks: Sequence[np.ndarray], time: np.ndarray, event: np.ndarray, n_boot: int = 1000,
                   alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Harrell C of every model (risk: higher = earlier event) and its difference to the first
    model, paired bootstrap: :func:`paired_bootstrap` with Harrell's C (same resamples, same
    table; the ``estimate`` column is ``c_index``), each resample's C-indices computed at once by
    :func:`clinfuse.experiments.bootstrap_c_index.bootstrap_c_index` instead of one
    scikit-survival call per resample and model.

    Raises:
        ValueError: no model, arrays of different lengths, bad labels or risks, or no event.
    """
    from clinfuse.experiments.bootstrap_c_index import bootstrap_c_index, resample_weights

    if not np.asarray(event, float).any():
        raise ValueError("no event among these patients: the C-index is undefined")
    scores, (time, event), n = _checked(risks, (time, event))
    # the estimates by scikit-survival (which also checks the labels and risks)
    estimate = np.array([np.mean([harrell_c_index(x, time, event) for x in r]) for r in scores])
    flat, sizes = np.concatenate(scores), np.cumsum([len(r) for r in scores])[:-1]
    draws, chunk = [], []
    for i, rows in enumerate(_resamples(n, n_boot, seed)):
        chunk.append(rows)
        if len(chunk) == 100 or i == n_boot - 1:  # 100 resamples' multiplicities at a time
            c = bootstrap_c_index(flat, time, event, resample_weights(np.stack(chunk), n))  # (100, sum k)
            draws.append(np.stack([part.mean(1) for part in np.split(c, sizes, axis=1)], 1))  # (100, models)
            chunk = []
    draws = np.concatenate(draws) if draws else np.zeros((0, len(scores)))
    table = _summary(estimate, draws[np.isfinite(draws).all(1)], alpha)
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


def n_boot_arg(text: str) -> int:
    """``type=`` of the ``--n-boot`` arguments: an integer of at least :data:`MIN_BOOT`."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer of at least {MIN_BOOT}, got {text!r}") from None
    if value < MIN_BOOT:
        raise argparse.ArgumentTypeError(f"at least {MIN_BOOT} bootstrap resamples are needed for an interval, got {value}")
    return value


def check_labels(root, task: str, command: str) -> None:
    """Check, before scoring, that ``root/labels.parquet`` has the labels ``task`` is scored on
    (``time`` and ``event`` for survival models, ``binary`` for binary ones; only its schema is read).

    Raises:
        ValueError: no folder ``root``, no ``labels.parquet``, an unreadable one, or one without
            these columns.
    """
    from pathlib import Path

    import pyarrow.parquet as pq

    if not Path(root).is_dir():
        raise ValueError(f"cohort folder {root} does not exist")
    path = Path(root) / "labels.parquet"
    need = ["time", "event"] if task == "survival" else ["binary"]
    what = f"clinfuse {command} of a {task} model needs {' and '.join(need)} labels in labels.parquet"
    if not path.is_file():
        raise ValueError(f"{root}: {what}; the folder has no labels.parquet")
    try:
        columns = pq.read_schema(path).names
    except Exception as err:  # pyarrow raises several types; name the file
        raise ValueError(f"{path}: cannot read labels: {err}") from err
    missing = [c for c in need if c not in columns]
    if missing:
        raise ValueError(f"{path}: {what}; it lacks column(s) {missing} (found {columns})")


def compare_main(argv: Sequence[str]) -> None:
    """``clinfuse compare``: several saved predictors on one cohort folder's labelled patients."""
    import argparse
    from pathlib import Path

    from clinfuse.experiments.cpu_allocator import keep_freed_memory
    from clinfuse.experiments.prognosis import Prognosis
    from clinfuse.experiments.subgroups import by_subgroup, check_group_column, subgroup_markdown, tabular_groups

    p = argparse.ArgumentParser(prog="clinfuse compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="predictor folders or MLflow model URIs; the first is the reference")
    p.add_argument("--root", required=True, help="a cohort folder with labels.parquet (time and event; binary for binary models)")
    p.add_argument("--split", default=None, help="only this split of splits.csv (e.g. test)")
    p.add_argument("--by", default=None, help="a column of the folder's tabular file: C-index per subgroup")
    p.add_argument("--n-boot", type=n_boot_arg, default=1000,
                   help=f"bootstrap resamples of the patients (at least {MIN_BOOT}; default 1000; subgroups use at most 200)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(list(argv))
    root = Path(a.root)
    if a.by:  # before any model is loaded or scored
        try:
            check_group_column(root, a.by)
        except ValueError as err:
            p.error(f"argument --by: {err}")
    keep_freed_memory()  # a scoring process: reuse freed tensor memory
    models = [Prognosis.load(m) for m in a.models]
    tasks = [m.model.task for m in models]
    if set(tasks) not in ({"survival"}, {"binary"}):
        p.error(f"the models must all be survival models or all binary models; their tasks are {tasks}")
    survival = tasks[0] == "survival"
    try:
        check_labels(root, tasks[0], "compare")
    except ValueError as err:
        p.error(str(err))
    frames = [m.predict_cohort(root, split=a.split, contributions=False, show_progress=False) for m in models]
    base = frames[0]
    for m, f in zip(a.models, frames):
        if f["patient_id"].tolist() != base["patient_id"].tolist():
            p.error(f"{m} scored other patients than {a.models[0]}")
    need = ["time", "event"] if survival else ["binary"]
    if base.reindex(columns=need).isna().any().any():
        p.error(f"{root}: clinfuse compare needs {' and '.join(need)} labels in labels.parquet for every scored patient")
    if survival:
        labels = {"time": base["time"].to_numpy(float), "event": base["event"].to_numpy(float)}
        scores, metric, count = [f["risk"].to_numpy(float) for f in frames], "Harrell C", "events"
        table = paired_c_index(scores, labels["time"], labels["event"], n_boot=a.n_boot, seed=a.seed)
    else:
        labels = {"binary": base["binary"].to_numpy(float)}
        scores, metric, count = [f["probability"].to_numpy(float) for f in frames], "AUROC", "positives"
        table = paired_auroc(scores, labels["binary"], n_boot=a.n_boot, seed=a.seed)
    names = [f"model {k}" for k in range(len(a.models))]
    n_count = int(labels["event" if survival else "binary"].sum())
    print(f"{len(base)} patients, {n_count} {count}{f' (split {a.split})' if a.split else ''}; "
          f"95% paired bootstrap intervals over {a.n_boot} resamples")
    print(f"| model | {metric} [95% CI] | difference to model 0 [95% CI] | p |\n|---|---|---|---|")
    from clinfuse.experiments.tracking import fusion_name

    for name, path, model, t in zip(names, a.models, models, table.to_dict("records")):
        path = f"{path} ({fusion_name(model.model.fusion)}; {', '.join(model.modalities)})"  # what an opaque URI holds
        diff = "-" if np.isnan(t["delta"]) else f"{t['delta']:+.4f} [{t['delta_low']:+.4f}, {t['delta_high']:+.4f}]"
        p_text = "-" if np.isnan(t["p_value"]) else f"{t['p_value']:.3g}"
        print(f"| {name}: {path} | {t[table.columns[0]]:.4f} [{t['low']:.4f}, {t['high']:.4f}] | {diff} | {p_text} |")
    if a.by:
        groups = tabular_groups(root, a.by, base["patient_id"])
        sub = by_subgroup(scores, names, labels, groups, n_boot=min(a.n_boot, 200), seed=a.seed)
        print(f"\n{metric} by {a.by} (95% bootstrap intervals, {min(a.n_boot, 200)} resamples):")
        print(subgroup_markdown(sub))


def markdown_table(frame: pd.DataFrame) -> str:
    """A small markdown table (floats to 4 decimals, NaN and None as '-')."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
