"""Survival evaluation metrics: thin, validated wrappers around scikit-survival.

Everything that scikit-survival implements (Uno's C, time-dependent AUC, Brier scores) is delegated
to it; this module only validates inputs, builds its structured arrays and chooses an evaluation
time grid it accepts. D-calibration and the patient bootstrap are written here because no
maintained library implements them (see the comments there).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import chisquare
from sksurv.metrics import (
    brier_score,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from clinfuse.experiments.metrics import harrell_c_index


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_1d(a, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def validate_survival(time, event, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Check (time, event) arrays and return them as float / bool numpy arrays.

    Args:
        time: (n,) observed times (event or censoring); must be finite and > 0.
        event: (n,) event indicators; must be 0/1 (or bool).
        name: prefix for error messages, e.g. ``"train"``.

    Raises:
        ValueError: naming the array (``{name}_time`` / ``{name}_event``) and the first bad index.
    """
    p = f"{name}_" if name else ""
    time = _check_1d(time, f"{p}time").astype(float)
    event_raw = _check_1d(event, f"{p}event")
    if len(time) != len(event_raw):
        raise ValueError(f"{p}time and {p}event must have equal lengths, got {len(time)} and {len(event_raw)}")
    bad = ~np.isfinite(time) | ~(time > 0)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"{p}time must be finite and > 0; first bad index {i} (value {time[i]})")
    ev = event_raw.astype(float)
    bad = ~np.isin(ev, (0.0, 1.0))
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"{p}event must be 0/1; first bad index {i} (value {event_raw[i]})")
    return time, ev.astype(bool)


@dataclass(frozen=True)
class SurvivalData:
    """Validated right-censored outcomes for one split.

    Attributes:
        time: (n,) float, > 0 and finite.
        event: (n,) bool, True = event observed.
        name: label used in error messages (``"train"``, ``"test"``).
    """

    time: np.ndarray
    event: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        time, event = validate_survival(self.time, self.event, self.name)
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "event", event)

    def __len__(self) -> int:
        return len(self.time)

    @property
    def structured(self) -> np.ndarray:
        """The scikit-survival structured array (fields ``event``, ``time``)."""
        return Surv.from_arrays(event=self.event, time=self.time)

    @classmethod
    def from_structured(cls, y: np.ndarray, name: str = "") -> "SurvivalData":
        """Build from a scikit-survival structured array (first field event, second time)."""
        ev_field, t_field = y.dtype.names
        return cls(y[t_field], y[ev_field], name)


def to_structured(time, event, name: str = "") -> np.ndarray:
    """Validate (time, event) and return a scikit-survival structured array."""
    return SurvivalData(time, event, name).structured


def _as_data(y, name: str) -> SurvivalData:
    if isinstance(y, SurvivalData):
        return y
    if isinstance(y, tuple) and len(y) == 2:
        return SurvivalData(y[0], y[1], name)
    if isinstance(y, np.ndarray) and y.dtype.names is not None and len(y.dtype.names) == 2:
        return SurvivalData.from_structured(y, name)
    raise ValueError(f"{name} must be SurvivalData, a (time, event) tuple or a structured array")


def _below_max(t: np.ndarray, name: str) -> float:
    """Largest distinct time strictly below max(t)."""
    u = np.unique(t)
    if len(u) < 2:
        raise ValueError(f"{name} needs at least two distinct times to build an evaluation grid")
    return float(u[-2])


def evaluation_times(train_time, train_event, test_time, test_event, n: int = 20, quantiles=(0.1, 0.9)) -> np.ndarray:
    """An evaluation time grid that scikit-survival always accepts.

    Rule: start from ``n`` equally spaced points between the ``quantiles`` of the observed test
    times, then clip the range to
    ``[max(first test event time, min train time), min(t_test, t_train)]`` where ``t_test`` /
    ``t_train`` are the largest distinct times strictly below the test / train maximum. Hence every
    point is inside the test follow-up ``[min test, max test)`` (sksurv's ``_check_times``), has at
    least one test event at or before it (else the AUC there is NaN) and a test patient still at
    risk after it, and lies strictly
    below the train maximum, where the Kaplan-Meier censoring estimate fitted on train is defined
    and > 0. Duplicates are removed, so fewer than ``n`` points may come back.

    Args:
        train_time, train_event: (n_train,) training outcomes (fit the censoring distribution).
        test_time, test_event: (n_test,) test outcomes.
        n: number of grid points requested (>= 1).
        quantiles: (low, high) quantiles of the test times spanned by the grid, 0 <= low <= high <= 1.

    Returns:
        (T,) sorted unique float times, T <= n.

    Raises:
        ValueError: bad inputs, or train and test follow-up ranges that do not overlap.
    """
    train_time, _ = validate_survival(train_time, train_event, "train")
    test_time, test_event = validate_survival(test_time, test_event, "test")
    q_lo, q_hi = quantiles
    if not 0.0 <= q_lo <= q_hi <= 1.0:
        raise ValueError(f"quantiles must satisfy 0 <= low <= high <= 1, got {quantiles}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    lo_q, hi_q = np.quantile(test_time, [q_lo, q_hi])
    if not test_event.any():
        raise ValueError("test_event has no events: time-dependent metrics are undefined")
    lower = max(test_time[test_event].min(), train_time.min())
    upper = min(_below_max(test_time, "test_time"), _below_max(train_time, "train_time"))
    if lower > upper:
        raise ValueError(f"train and test follow-up do not overlap: no time in [{lower}, {upper}]")
    lo = float(np.clip(lo_q, lower, upper))
    hi = float(np.clip(hi_q, lower, upper))
    return np.unique(np.linspace(lo, hi, n))


def _check_scores(a, n: int, name: str, ndim: int = 1) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim != ndim or arr.shape[0] != n:
        raise ValueError(f"{name} must have {ndim} dim(s) with {n} rows, got shape {arr.shape}")
    bad = ~np.isfinite(arr).reshape(n, -1).all(axis=1)
    if bad.any():
        raise ValueError(f"{name} must be finite; first bad index {_first_bad(bad)}")
    return arr


def _check_times(times, name: str = "times", increasing: bool = True) -> np.ndarray:
    """``times`` as a non-empty 1-D finite float array; strictly increasing when ``increasing``."""
    arr = np.asarray(times, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"{name} must be finite; first bad index {i} (value {arr[i]})")
    if increasing:
        bad = np.diff(arr) <= 0
        if bad.any():
            i = _first_bad(bad) + 1
            raise ValueError(f"{name} must be strictly increasing (columns of surv_probs are matched to it in order); "
                             f"first bad index {i} (value {arr[i]} after {arr[i - 1]})")
    return arr


def _check_surv_probs(surv_probs, n: int, n_times: int, name: str = "surv_probs") -> np.ndarray:
    """(n, n_times) survival probabilities, finite and in [0, 1] (rounding excursions up to 1e-6 are
    clipped); errors name the first bad (row, column)."""
    arr = np.asarray(surv_probs, dtype=float)
    if arr.shape != (n, n_times):
        raise ValueError(f"{name} must have shape ({n}, {n_times}) (test patients, times), got {arr.shape}")
    arr = np.where((arr > 1) & (arr <= 1 + 1e-6), 1.0, np.where((arr < 0) & (arr >= -1e-6), 0.0, arr))
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite survival probabilities in [0, 1]; first bad row {i}, "
                         f"column {j} (value {arr[i, j]})")
    return arr


def uno_c_index(train, test, risk, tau: float | None = None) -> float:
    """Uno's IPCW concordance (sksurv ``concordance_index_ipcw``), truncated at ``tau``.

    Args:
        train, test: SurvivalData, (time, event) tuples or sksurv structured arrays.
        risk: (n_test,) higher = earlier event.
        tau: truncation time, finite and above the smallest test time (pairs are only compared
            when the earlier time is below ``tau``); None uses all test times (then test event
            times must lie where the train censoring estimate is > 0, else sksurv raises).
    """
    train, test = _as_data(train, "train"), _as_data(test, "test")
    risk = _check_scores(risk, len(test), "risk")
    if tau is not None:
        first = float(test.time.min())
        if isinstance(tau, bool) or not np.isscalar(tau) or not (np.isfinite(tau) and tau > first):
            raise ValueError(f"tau must be None or a finite number above the smallest test time ({first}); got {tau!r}")
        tau = float(tau)
    return float(concordance_index_ipcw(train.structured, test.structured, risk, tau=tau)[0])


def _events_until(test: SurvivalData, times) -> SurvivalData:
    """``test`` with its events after the last of ``times`` marked censored.

    sksurv's IPCW metrics weight every test *event* by the training censoring distribution, which
    is undefined past the last training time, so one test event later than every training time made
    them raise, whatever the grid. At a grid time ``t``, a patient with time ``> t`` counts as a
    control (AUC) or as still event-free (Brier) whether or not the event happens later, and the
    test Kaplan-Meier up to ``t`` does not depend on later events, so for ``times`` the metrics are
    unchanged (tests/experiments/test_survival_metrics.py checks the AUC against a hand computation).
    """
    late = test.event & (test.time > float(np.max(times)))
    return test if not late.any() else SurvivalData(test.time, test.event & ~late, "test")


def _follow_up_within(train: SurvivalData, test: SurvivalData, times) -> SurvivalData:
    """For the Brier score, which also weights each test patient's own time by the training
    censoring distribution: :func:`_events_until`, and times past the last training time moved
    back to it. A patient whose time stays beyond the last of ``times`` enters every grid time
    only as event-free, weighted at the grid time, so the scores are unchanged."""
    test = _events_until(test, times)
    last = float(train.time.max())
    return test if not (test.time > last).any() else SurvivalData(np.minimum(test.time, last), test.event, "test")


def time_dependent_auc(train, test, risk, times) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC (sksurv ``cumulative_dynamic_auc``).

    Args:
        risk: ``(n,)`` one score for every time, or ``(n, T)`` one per time (``1 - S(t | x)`` of
            a model whose survival curves may cross, e.g. a discrete-time model: ranking such a
            model by one summary score at every time under-reports its AUC). 2-D needs strictly
            increasing ``times``.

    Returns:
        (auc (T,), mean_auc) with ``times`` sorted and de-duplicated as sksurv does.
    """
    train, test = _as_data(train, "train"), _as_data(test, "test")
    if np.ndim(risk) == 2:
        times = _check_times(times)  # sksurv sorts the times, not the columns
        risk = _check_scores(risk, len(test), "risk", ndim=2)
        if risk.shape[1] != len(times):
            raise ValueError(f"risk has {risk.shape[1]} columns for {len(times)} times")
    else:
        risk = _check_scores(risk, len(test), "risk")
        times = _check_times(times, increasing=False)  # one AUC per sorted unique time, as sksurv returns them
    test = _events_until(test, times)
    auc, mean_auc = cumulative_dynamic_auc(train.structured, test.structured, risk, times)
    return np.asarray(auc), float(mean_auc)


def brier_scores(train, test, surv_probs, times) -> np.ndarray:
    """IPCW Brier score at each time (sksurv ``brier_score``).

    Args:
        surv_probs: (n_test, T) predicted S(times[j] | x_i), finite and in [0, 1].
        times: (T,) finite and strictly increasing. Required because sksurv sorts ``times`` but not
            the columns of ``surv_probs``, so unsorted times would silently pair columns with the
            wrong times.

    Returns:
        (T,) Brier scores.
    """
    train, test = _as_data(train, "train"), _as_data(test, "test")
    times = _check_times(times)
    surv_probs = _check_surv_probs(surv_probs, len(test), len(times))
    test = _follow_up_within(train, test, times)
    return np.asarray(brier_score(train.structured, test.structured, surv_probs, times)[1])


def integrated_brier(train, test, surv_probs, times) -> float:
    """Integrated Brier score over ``times`` (sksurv ``integrated_brier_score``; needs T >= 2).

    ``surv_probs`` (n_test, T) and ``times`` (T,) are checked as in :func:`brier_scores`: finite
    probabilities in [0, 1], times finite and strictly increasing.
    """
    train, test = _as_data(train, "train"), _as_data(test, "test")
    times = _check_times(times)
    surv_probs = _check_surv_probs(surv_probs, len(test), len(times))
    test = _follow_up_within(train, test, times)
    return float(integrated_brier_score(train.structured, test.structured, surv_probs, times))


def d_calibration(surv_at_time, event, n_bins: int = 10) -> dict:
    """D-calibration test (Haider et al., JMLR 2020).

    No maintained Python library implements it (lifelines / scikit-survival do not; pycox and
    SurvivalEVAL are research code), so it is written here. Under a calibrated model,
    S(T_i | x_i) ~ Uniform(0, 1). An event patient adds 1 to the bin holding S(t_i). A censored
    patient with s = S(c_i) only tells us S(T_i) < s, uniform on [0, s): it adds (s - l)/s to the
    bin [l, u) holding s and 1/(n_bins * s) to every bin fully below it (total 1). Bin counts are
    compared with the uniform expectation n/n_bins by a chi-square test (scipy), n_bins - 1 dof.

    Args:
        surv_at_time: (n,) predicted survival at each patient's event or censoring time, in [0, 1].
        event: (n,) 0/1 event indicators.
        n_bins: number of equal-width bins on [0, 1].

    Returns:
        dict with ``statistic``, ``p_value`` and ``bin_counts`` (n_bins,), bin 0 = [0, 1/n_bins).
    """
    s = _check_1d(surv_at_time, "surv_at_time").astype(float)
    ev = _check_1d(event, "event").astype(float)
    if len(s) != len(ev):
        raise ValueError(f"surv_at_time and event must have equal lengths, got {len(s)} and {len(ev)}")
    bad = ~np.isfinite(s) | (s < 0) | (s > 1)
    if bad.any():
        raise ValueError(f"surv_at_time must be in [0, 1]; first bad index {_first_bad(bad)}")
    bad = ~np.isin(ev, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"event must be 0/1; first bad index {_first_bad(bad)}")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    width = 1.0 / n_bins
    idx = np.minimum((s * n_bins).astype(int), n_bins - 1)  # S == 1 goes to the top bin
    counts = np.zeros(n_bins)
    np.add.at(counts, idx[ev == 1], 1.0)
    for si, b in zip(s[ev == 0], idx[ev == 0]):
        if si <= 0.0:  # no mass left below: all of it sits in the lowest bin
            counts[0] += 1.0
            continue
        counts[b] += (si - b * width) / si
        counts[:b] += width / si
    stat, p = chisquare(counts)
    return {"statistic": float(stat), "p_value": float(p), "bin_counts": counts}


class BootstrapCI(tuple):
    """``(estimate, low, high)``; ``n_skipped`` = resamples where the metric was undefined."""

    n_skipped: int

    def __new__(cls, estimate: float, low: float, high: float, n_skipped: int) -> "BootstrapCI":
        obj = super().__new__(cls, (estimate, low, high))
        obj.n_skipped = n_skipped
        return obj


def bootstrap_ci(metric_fn: Callable[..., float], *arrays, n_boot: int = 200, alpha: float = 0.05, seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap over patients (rows of all ``arrays`` resampled jointly).

    Written here because scipy.stats.bootstrap cannot skip resamples where the metric is undefined
    (e.g. no comparable pair, sksurv raising on a resample's follow-up), which survival metrics hit.

    Args:
        metric_fn: ``metric_fn(*arrays) -> float``; NaN or ValueError marks an undefined resample.
        arrays: arrays with equal first dimension n.
        n_boot: number of resamples, an integer >= 1.
        alpha: 1 - confidence level.
        seed: numpy Generator seed.

    Returns:
        BootstrapCI ``(estimate, low, high)`` with ``.n_skipped``; a warning is issued when > 0.
        ``low``/``high`` are NaN when every resample was skipped.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    for k, a in enumerate(arrays):
        if len(a) != n:
            raise ValueError(f"arrays[{k}] has {len(a)} rows, expected {n} (as arrays[0])")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    estimate = float(metric_fn(*arrays))
    rng = np.random.default_rng(seed)
    values, skipped = [], 0
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        try:
            v = float(metric_fn(*(a[rows] for a in arrays)))
        except ValueError:
            v = float("nan")
        if np.isfinite(v):
            values.append(v)
        else:
            skipped += 1
    if skipped:
        warnings.warn(f"bootstrap_ci: skipped {skipped} of {n_boot} resamples where the metric was undefined")
    if not values:
        return BootstrapCI(estimate, float("nan"), float("nan"), skipped)
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(estimate, float(low), float(high), skipped)


def survival_report(
    train_time, train_event, test_time, test_event, risk, surv_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    n_boot: int = 200, seed: int = 0, curve_auc: bool = False, model_horizon: float | None = None,
) -> dict:
    """All survival metrics for one model on one test split.

    Uno's C is truncated at the last grid time (see ``evaluation_times``) so the IPCW weights are
    defined. Survival-curve metrics (IBS, D-calibration) are NaN when ``surv_fn`` is None.
    D-calibration needs S(t_i | x_i) at each patient's own time: ``surv_fn`` is called on the
    sorted unique test times and the diagonal is read off.

    Args:
        train_time, train_event, test_time, test_event: (n,) outcomes per split.
        risk: (n_test,) risk scores, higher = earlier event.
        surv_fn: ``surv_fn(times (T,)) -> (n_test, T)`` predicted survival probabilities, finite
            and in [0, 1] (a ValueError names the first bad row and column otherwise).
        n_boot, seed: bootstrap settings for the C-index intervals.
        curve_auc: score the time-dependent AUC at each grid time by ``1 - surv_fn(t)`` instead of
            ``risk`` (for models whose curves may cross: discrete-time ones; needs ``surv_fn``).
        model_horizon: the last time the model's curve is estimated at (a discrete model's last
            finite bin end, a Breslow baseline's last training event); after it the curve is
            only held flat. The curve metrics then stop there: IBS over the grid times up to it,
            and D-calibration reads a patient whose time lies beyond it as censored at it (all
            we can test is that S(horizon) was right). None: the whole grid, every own time.

    Returns:
        dict of floats: harrell(+_low/_high), uno(+_low/_high), mean_td_auc, ibs, d_calibration_p,
        and ``n_skipped_harrell`` / ``n_skipped_uno``.
    """
    train = SurvivalData(train_time, train_event, "train")
    test = SurvivalData(test_time, test_event, "test")
    risk = _check_scores(risk, len(test), "risk")
    times = evaluation_times(train.time, train.event, test.time, test.event)
    tau = float(times[-1])

    def uno(t, e, r):
        return uno_c_index(train, SurvivalData(t, e, "test"), r, tau=tau)

    out: dict = {}
    harrell = bootstrap_ci(lambda t, e, r: harrell_c_index(r, t, e), test.time, test.event, risk, n_boot=n_boot, seed=seed)
    uno_ci = bootstrap_ci(uno, test.time, test.event, risk, n_boot=n_boot, seed=seed)
    for key, ci in (("harrell", harrell), ("uno", uno_ci)):
        out[key], out[f"{key}_low"], out[f"{key}_high"] = ci
        out[f"n_skipped_{key}"] = ci.n_skipped
    if curve_auc and surv_fn is None:
        raise ValueError("curve_auc needs surv_fn")
    grid_surv = None if surv_fn is None else _check_surv_probs(surv_fn(times), len(test), len(times), "surv_fn(evaluation times)")
    out["mean_td_auc"] = time_dependent_auc(train, test, 1.0 - grid_surv if curve_auc else risk, times)[1]
    out["ibs"] = out["d_calibration_p"] = float("nan")
    if surv_fn is not None:
        out.update(curve_metrics(train, test, surv_fn, times, model_horizon, grid_surv))
    return out


def curve_metrics(train, test, surv_fn: Callable[[np.ndarray], np.ndarray], times, model_horizon: float | None = None,
                  grid_surv: np.ndarray | None = None) -> dict[str, float]:
    """IBS over ``times`` and the D-calibration p-value of a model's survival curves, stopping at
    ``model_horizon`` (see :func:`survival_report`): IBS over the grid times up to it (NaN when
    fewer than two), D-calibration with times beyond it read as censored there.

    Args:
        train, test: ``(time, event)`` pairs or :class:`SurvivalData`.
        surv_fn: ``surv_fn(times (T,)) -> (n_test, T)`` survival probabilities in [0, 1].
        times: the evaluation grid (``evaluation_times``); ``grid_surv``: ``surv_fn(times)`` if
            already computed.

    Returns:
        ``{"ibs", "d_calibration_p"}``.
    """
    train, test = _as_data(train, "train"), _as_data(test, "test")
    times = np.asarray(times, dtype=float)
    if grid_surv is None:
        grid_surv = _check_surv_probs(surv_fn(times), len(test), len(times), "surv_fn(evaluation times)")
    within = times <= model_horizon if model_horizon is not None else np.ones(len(times), bool)
    ibs = integrated_brier(train, test, grid_surv[:, within], times[within]) if within.sum() >= 2 else float("nan")
    own_time, own_event = test.time, test.event
    if model_horizon is not None:
        beyond = own_time > model_horizon
        own_time, own_event = np.where(beyond, model_horizon, own_time), np.where(beyond, False, own_event)
    uniq, inv = np.unique(own_time, return_inverse=True)
    curves = _check_surv_probs(surv_fn(uniq), len(test), len(uniq), "surv_fn(test times)")
    return {"ibs": ibs, "d_calibration_p": d_calibration(curves[np.arange(len(test)), inv.ravel()], own_event)["p_value"]}
