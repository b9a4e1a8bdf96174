"""Competing risks: predicted cumulative incidence per cause against the Aalen-Johansen estimate.

The observed curves are scikit-survival's ``cumulative_incidence_competing_risks`` (Aalen-Johansen,
log-log 95% intervals) on the split's labels; the predicted curve of a cause is the mean over
patients of the model's CIF. A well calibrated model's mean curve follows the observed one (the
competing-risks analogue of comparing the mean predicted survival with Kaplan-Meier). Figures are
bare :class:`matplotlib.figure.Figure` objects, as in :mod:`clinfuse.experiments.survival_plots`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def incidence_table(pred_cif, times, time, cause, cause_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean predicted vs Aalen-Johansen cumulative incidence of every cause at ``times``.

    Args:
        pred_cif: (n, R, T) each patient's predicted CIF of each cause at ``times``.
        times: (T,) increasing evaluation times (> 0).
        time: (n,) observed times (> 0).
        cause: (n,) 0 = censored, 1..R = the event's cause.
        cause_names: R names (default ``cause_1`` ...).

    Returns:
        One row per (cause, time): ``cause``, ``time``, ``predicted``, ``observed``,
        ``observed_lower``, ``observed_upper``.

    Raises:
        ValueError: shapes that do not match, causes outside ``0..R``, or a cause with no event
            (the estimator needs every cause observed at least once).
    """
    from sksurv.nonparametric import cumulative_incidence_competing_risks

    pred = np.asarray(pred_cif, dtype=float)
    times, time, cause = np.asarray(times, float), np.asarray(time, float), np.asarray(cause)
    if pred.ndim != 3 or pred.shape[0] != len(time) or pred.shape[2] != len(times) or len(cause) != len(time):
        raise ValueError(f"pred_cif must be (n, R, T) = ({len(time)}, R, {len(times)}), got {pred.shape}")
    n_causes = pred.shape[1]
    names = list(cause_names or [f"cause_{r}" for r in range(1, n_causes + 1)])
    if len(names) != n_causes:
        raise ValueError(f"{len(names)} cause names for {n_causes} causes")
    if (cause != np.round(cause)).any() or cause.min() < 0 or cause.max() > n_causes:
        raise ValueError(f"cause must be integers in [0, {n_causes}]")
    missing = [names[r - 1] for r in range(1, n_causes + 1) if not (cause == r).any()]
    if missing:
        raise ValueError(f"no event of {missing} in this split: the Aalen-Johansen estimate needs one per cause")
    x, cif, ci = cumulative_incidence_competing_risks(cause.astype(int), time, conf_type="log-log")
    at = np.searchsorted(x, times, side="right") - 1  # right-continuous step value at each time
    rows = []
    for r in range(n_causes):
        obs = np.where(at >= 0, cif[r + 1, np.clip(at, 0, None)], 0.0)
        low = np.where(at >= 0, ci[r + 1, 0, np.clip(at, 0, None)], 0.0)
        high = np.where(at >= 0, ci[r + 1, 1, np.clip(at, 0, None)], 0.0)
        for j, t in enumerate(times):
            rows.append((names[r], float(t), float(pred[:, r, j].mean()), float(obs[j]), float(low[j]), float(high[j])))
    return pd.DataFrame(rows, columns=["cause", "time", "predicted", "observed", "observed_lower", "observed_upper"])


def incidence_plot(pred_cif, times, time, cause, cause_names=None, path=None,
                   time_unit: str | None = None) -> tuple[Figure, pd.DataFrame]:
    """One panel per cause: mean predicted CIF (a line) and the Aalen-Johansen estimate (steps) with its 95%
    interval; saved as PNG at ``path`` when given. Arguments as :func:`incidence_table`;
    ``time_unit`` labels the time axis."""
    table = incidence_table(pred_cif, times, time, cause, cause_names)
    causes = list(dict.fromkeys(table["cause"]))
    fig = Figure(figsize=(4.2 * len(causes), 4.0))
    for k, name in enumerate(causes):
        ax = fig.add_subplot(1, len(causes), k + 1)
        t = table[table["cause"] == name]
        ax.step(t["time"], t["observed"], where="post", color="black", label="Aalen-Johansen (observed)")
        ax.fill_between(t["time"], t["observed_lower"], t["observed_upper"], step="post", color="grey", alpha=0.25,
                        label="95% interval (observed)")
        ax.plot(t["time"], t["predicted"], color="tab:red", label="mean predicted")  # linear between bin ends
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"time ({time_unit})" if time_unit else "time")
        ax.set_title(f"cumulative incidence: {name}\n(test split, n = {len(time)})")
        if k == 0:
            ax.set_ylabel("cumulative incidence")
            ax.legend(loc="upper left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, format="png", dpi=100)
    return fig, table
