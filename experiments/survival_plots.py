"""Survival plots: Kaplan-Meier curves by predicted-risk group, and calibration at a horizon.

Kaplan-Meier estimation, at-risk tables and the log-rank test are delegated to lifelines.
Figures are built as bare :class:`matplotlib.figure.Figure` objects (rendered by matplotlib's Agg,
PDF or SVG canvas when saved, as the path's suffix says), never through ``pyplot``: nothing is
displayed, no global backend is switched and no figure is left registered in pyplot's figure manager.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from lifelines.statistics import multivariate_logrank_test
from matplotlib.figure import Figure

from clinfuse.experiments.survival_metrics import validate_survival


def _values(a, n: int, name: str, low: float = -np.inf, high: float = np.inf) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must be 1-D with length {n} (like time), got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < low) | (arr > high)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and in [{low}, {high}]; first bad index {i} (value {arr[i]})")
    return arr


def _quantile_groups(values: np.ndarray, n_groups: int, name: str, arg: str = "n_groups") -> np.ndarray:
    """0..k-1 labels by quantiles of ``values`` (0 = lowest values), ``k <= n_groups``.

    Equal-frequency groups as ``pandas.qcut`` forms them. Tied values always share a group, so when
    ties make quantile edges coincide (e.g. every patient without a modality gets the same
    prediction) ``pandas.qcut`` cannot form ``n_groups`` groups; then :func:`_tied_groups` forms
    ordered groups of whole runs of ties, as many as the ties allow (one when every value is the
    same), never failing.
    """
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or n_groups < 2:
        raise ValueError(f"{arg} must be an integer >= 2, got {n_groups!r}")
    if len(values) < n_groups:
        raise ValueError(f"{name} has {len(values)} values, fewer than the {n_groups} groups asked for")
    try:
        groups = np.asarray(pd.qcut(values, n_groups, labels=False), dtype=int)
    except ValueError:  # duplicate bin edges: too many ties for this many equal-frequency groups
        return _tied_groups(values, n_groups)
    return np.unique(groups, return_inverse=True)[1].reshape(-1)  # a bin left empty is dropped


def _tied_groups(values: np.ndarray, n_groups: int) -> np.ndarray:
    """Ordered groups made of whole runs of tied values: as many as the runs allow (at most
    ``n_groups``), with sizes as equal as the ties allow (least sum of squared sizes, found by
    dynamic programming over the runs in order of value)."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    m, k = len(uniq), min(n_groups, len(uniq))
    cum = np.concatenate([[0], np.cumsum(counts)]).astype(float)  # cum[j] = size of the first j runs
    cost = cum**2  # cost[j]: the first j runs as one group
    cuts = np.zeros((k, m + 1), dtype=int)  # cuts[g, j]: where the last of g + 1 groups of the first j runs starts
    for g in range(1, k):
        new = np.full(m + 1, np.inf)
        for j in range(g + 1, m + 1):
            i = np.arange(g, j)  # the last group is runs i..j-1; the first g groups hold runs 0..i-1
            total = cost[i] + (cum[j] - cum[i]) ** 2
            best = int(np.argmin(total))
            new[j], cuts[g, j] = total[best], i[best]
        cost = new
    label, j = np.empty(m, dtype=int), m
    for g in range(k - 1, -1, -1):
        i = cuts[g, j] if g else 0
        label[i:j] = g
        j = i
    return label[inverse.reshape(-1)]


def _groups_note(sizes, asked: int, what: str) -> str:
    """Title note on the groups formed: ``sizes`` per group, ``asked`` for (ties can leave fewer or
    unequal ones, and the note then starts on a new line; equal-frequency groups of untied values
    differ in size by at most one)."""
    sizes = np.asarray(sizes)
    if len(sizes) < asked:
        return f"\n({len(sizes)} of {asked} {what}: ties kept together)"
    if sizes.max() - sizes.min() > 1:
        return f"\n({asked} unequal {what}: ties kept together)"
    return f" ({asked} {what})"


SAVE_FORMATS = ("png", "pdf", "svg")


def _check_path(path) -> tuple[Path, str] | None:
    """``(path, format)`` for :func:`_save`, or None when ``path`` is None; called before any work
    so a bad path fails at once.

    The format is the one the suffix names: ``.png``, ``.pdf`` or ``.svg`` (any case). A missing
    parent folder is an error rather than created: a mistyped folder name would otherwise scatter
    figures into a new folder unnoticed (``open``, matplotlib's ``savefig`` and pandas' writers
    refuse too); create the output folder first.

    Raises:
        ValueError: ``path`` is not a str / os.PathLike, has another suffix (or none), or its
            parent folder does not exist (the path and the folder are named).
    """
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
    target = Path(path)
    fmt = target.suffix.lower().lstrip(".")
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"path must end in one of {tuple('.' + f for f in SAVE_FORMATS)} (the format written), "
                         f"got {str(path)!r}")
    if not target.parent.is_dir():
        raise ValueError(f"the folder of path does not exist: {str(target.parent)!r} (for {str(path)!r}); "
                         "create it first")
    return target, fmt


def _save(fig: Figure, path) -> None:
    """Save ``fig`` to ``path`` (if not None) in the format its suffix names (see :func:`_check_path`)."""
    checked = _check_path(path)
    if checked is not None:
        fig.savefig(checked[0], format=checked[1], dpi=100)


def risk_groups(risk, n_groups: int = 3) -> np.ndarray:
    """Quantile groups of predicted risk: 0 = lowest risk, the last = highest (tied risks share a
    group, so ties may leave fewer than ``n_groups``)."""
    risk = np.asarray(risk, dtype=float)
    return _quantile_groups(_values(risk, len(risk), "risk"), n_groups, "risk")


def km_by_risk_group(risk, time, event, n_groups: int = 3, path=None, time_unit: str | None = None,
                     what: str | None = None) -> tuple[Figure, float]:
    """Kaplan-Meier curves per predicted-risk quantile group, with the multivariate log-rank test.

    Args:
        risk: (n,) predicted risk (higher = worse), e.g. a Cox log-risk.
        time: (n,) observed times, finite and > 0.
        event: (n,) event indicators, 0/1 or bool.
        n_groups: number of quantile groups (>= 2); fewer are formed when ties demand it.
        path: if given, the figure is saved there, as PNG, PDF or SVG as its suffix (``.png``,
            ``.pdf``, ``.svg``) says; its folder must exist (see :func:`_save`).
        time_unit: the unit of ``time`` for the axis label (e.g. ``"days"``).
        what: the patients shown, for the title (e.g. ``"test split"``); ``n`` is added.

    Returns:
        (figure, p-value of ``lifelines.statistics.multivariate_logrank_test`` across the groups).

    Raises:
        ValueError: bad arrays (named, with the first bad index), bad ``n_groups``, or fewer
            values than ``n_groups``. Tied risks never fail: they share a group, and when ties leave
            fewer groups than ``n_groups`` the title says how many were formed (one group, every
            risk tied: the p-value is NaN). A bad ``path`` (see :func:`_check_path`), before any work.
    """
    _check_path(path)
    time, event = validate_survival(time, event)
    groups = _quantile_groups(_values(risk, len(time), "risk"), n_groups, "risk")
    formed = int(groups.max()) + 1
    # one group (every risk tied): nothing to compare, the test is undefined
    p_value = float(multivariate_logrank_test(time, groups, event).p_value) if formed > 1 else float("nan")

    fig = Figure(figsize=(7, 5.5))
    ax = fig.add_subplot(111)
    fitters = []
    for g in range(formed):
        m = groups == g
        if formed == 1:
            label = "all patients (risks tied)"
        else:
            label = "lowest risk" if g == 0 else "highest risk" if g == formed - 1 else f"risk group {g + 1}"
        kmf = KaplanMeierFitter(label=f"{label} (n={m.sum()})").fit(time[m], event[m])
        kmf.plot_survival_function(ax=ax, ci_show=True)
        fitters.append(kmf)
    add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"])
    ax.set_xlabel(f"time ({time_unit})" if time_unit else "time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    note = _groups_note(np.bincount(groups), n_groups, "groups")
    test = f"log-rank p = {p_value:.3g}" if formed > 1 else "log-rank test: one group, nothing to compare"
    who = f"{what}, n = {len(time)}: " if what else ""
    ax.set_title(f"{who}Kaplan-Meier by predicted risk{note}\n{test}")
    fig.tight_layout()
    _save(fig, path)
    return fig, p_value


def calibration_table(pred_surv_at_t, time, event, t: float, n_bins: int = 5) -> pd.DataFrame:
    """Predicted vs observed survival at horizon ``t``, in quantile bins of predicted survival.

    Observed survival in each bin is the Kaplan-Meier estimate at ``t`` (so censoring is handled);
    where a bin's follow-up ends before ``t`` the KM value is its last one (flat), as lifelines does.

    Returns:
        One row per bin formed (0 = lowest predicted survival; fewer than ``n_bins`` rows when tied
        predictions fill more than a bin, see :func:`_quantile_groups`) with columns ``bin, n, n_events,
        predicted`` (mean predicted survival), ``observed`` (KM at t), ``observed_lower``,
        ``observed_upper`` (lifelines' 95% KM confidence band at t).
    """
    time, event = validate_survival(time, event)
    pred = _values(pred_surv_at_t, len(time), "pred_surv_at_t", 0.0, 1.0)
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"t must be finite and > 0, got {t}")
    bins = _quantile_groups(pred, n_bins, "pred_surv_at_t", "n_bins")
    rows = []
    for b in range(int(bins.max()) + 1):
        m = bins == b
        kmf = KaplanMeierFitter().fit(time[m], event[m])
        ci = kmf.confidence_interval_survival_function_
        ci_at = ci[ci.index <= t].iloc[-1] if (ci.index <= t).any() else pd.Series([1.0, 1.0])
        rows.append(
            {
                "bin": b,
                "n": int(m.sum()),
                "n_events": int(event[m].sum()),
                "predicted": float(pred[m].mean()),
                "observed": float(kmf.predict(t)),
                "observed_lower": float(ci_at.iloc[0]),
                "observed_upper": float(ci_at.iloc[1]),
            }
        )
    return pd.DataFrame(rows)


def calibration_plot(pred_surv_at_t, time, event, t: float, n_bins: int = 5, path=None, time_unit: str | None = None,
                     what: str | None = None) -> tuple[Figure, pd.DataFrame]:
    """Calibration plot of survival at horizon ``t``: predicted vs Kaplan-Meier observed per bin.

    Args:
        pred_surv_at_t: (n,) predicted survival probabilities at ``t``, in [0, 1].
        time: (n,) observed times, finite and > 0.
        event: (n,) event indicators, 0/1 or bool.
        t: the horizon (> 0).
        n_bins: number of quantile bins of predicted survival (>= 2); fewer are formed when ties
            demand it, and the title says so.
        path: if given, the figure is saved there, as PNG, PDF or SVG as its suffix (``.png``,
            ``.pdf``, ``.svg``) says; its folder must exist (see :func:`_save`).
        time_unit: the unit of ``t`` for the labels (e.g. ``"days"``).
        what: the patients and the choice of ``t``, for the title (e.g. ``"test split; t = median
            follow-up"``); ``n`` is added.

    Returns:
        (figure, table from :func:`calibration_table`).

    Raises:
        ValueError: bad inputs (see :func:`calibration_table`), or a bad ``path`` (see
            :func:`_check_path`), before any work.
    """
    _check_path(path)
    table = calibration_table(pred_surv_at_t, time, event, t, n_bins)
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(111)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    yerr = np.vstack([table["observed"] - table["observed_lower"], table["observed_upper"] - table["observed"]])
    ax.errorbar(table["predicted"], table["observed"], yerr=np.clip(yerr, 0, None), fmt="o-", capsize=3,
                label="Kaplan-Meier per bin (95% CI)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    at = f"t = {t:g} {time_unit}" if time_unit else f"t = {t:g}"
    ax.set_xlabel(f"predicted survival at {at}")
    ax.set_ylabel(f"observed (Kaplan-Meier) survival at {at}")
    who = f"\n({what}, n = {int(table['n'].sum())})" if what else ""
    ax.set_title(f"Calibration at {at}{_groups_note(table['n'], n_bins, 'bins')}{who}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    return fig, table
