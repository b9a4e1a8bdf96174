"""Survival curves from a risk model: the Breslow estimator of the cumulative baseline hazard.

A Cox-type model (including a neural one trained with the Cox partial likelihood) predicts only a
log-risk ``r(x)``. Turning that into survival curves needs the cumulative baseline hazard ``H0(t)``,
estimated on the TRAINING set by Breslow's estimator; then ``S(t | x) = exp(-H0(t) exp(r(x)))``.

The estimator itself is delegated to :class:`sksurv.linear_model.coxph.BreslowEstimator`, whose
``fit(linear_predictor, event, time)`` accepts any given linear predictor (it is not tied to a
fitted ``CoxPHSurvivalAnalysis``). This module validates inputs, keeps only the event times (the
step function jumps only there), evaluates it without sksurv's domain restriction, and gives a
JSON-able state so the baseline can be saved next to a model checkpoint.
"""

from __future__ import annotations

import numpy as np
from sksurv.linear_model.coxph import BreslowEstimator

from clinfuse.experiments.survival_metrics import validate_survival


def _risk_array(risk, name: str = "risk", n: int | None = None) -> np.ndarray:
    arr = np.asarray(risk, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} must have length {n}, got {len(arr)}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite; first bad index {i} (value {arr[i]})")
    return arr


def _times_array(times, name: str = "times") -> np.ndarray:
    arr = np.atleast_1d(np.asarray(times, dtype=float))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and >= 0; first bad index {i} (value {arr[i]})")
    return arr


class BreslowBaseline:
    """Breslow cumulative baseline hazard, fitted from given log-risks on the training set.

    Attributes:
        event_times: (K,) sorted unique training times at which at least one event occurred.
        cum_hazard: (K,) cumulative baseline hazard ``H0`` just after each event time
            (non-decreasing). ``H0(t) = 0`` before the first event time and stays at
            ``cum_hazard[-1]`` after the last one (flat extrapolation: the estimator says nothing
            beyond the training follow-up, so curves there are a lower bound on the hazard).
    """

    def __init__(self, event_times=None, cum_hazard=None) -> None:
        self.event_times = None if event_times is None else np.asarray(event_times, dtype=float)
        self.cum_hazard = None if cum_hazard is None else np.asarray(cum_hazard, dtype=float)
        if self.event_times is not None:
            self._check_state()

    # ------------------------------------------------------------------ fitting
    def fit(self, risk, time, event) -> "BreslowBaseline":
        """Fit ``H0`` on training data.

        Args:
            risk: (n,) log-risk (linear predictor) of each training patient.
            time: (n,) observed times, finite and > 0.
            event: (n,) event indicators, 0/1 or bool.

        Returns:
            self.

        Raises:
            ValueError: naming the bad array (``risk``/``time``/``event``) and first bad index,
                unequal lengths, or no events at all.
        """
        time, event = validate_survival(time, event)
        risk = _risk_array(risk, "risk", len(time))
        if not event.any():
            raise ValueError("event has no events: the baseline hazard cannot be estimated")
        est = BreslowEstimator().fit(risk, event, time)
        # sksurv reports every unique time (censoring times too); H0 only jumps at event times.
        keep = np.isin(est.unique_times_, np.unique(time[event]))
        self.event_times = np.asarray(est.unique_times_[keep], dtype=float)
        self.cum_hazard = np.asarray(est.cum_baseline_hazard_.y[keep], dtype=float)
        return self

    # --------------------------------------------------------------- prediction
    def _fitted(self) -> None:
        if self.event_times is None:
            raise ValueError("BreslowBaseline is not fitted: call fit() or from_state() first")

    def baseline_cum_hazard(self, times) -> np.ndarray:
        """``H0(t)`` at ``times`` (T,) -> (T,), right-continuous step function."""
        self._fitted()
        t = _times_array(times)
        idx = np.searchsorted(self.event_times, t, side="right") - 1
        return np.where(idx >= 0, self.cum_hazard[np.clip(idx, 0, None)], 0.0)

    def survival(self, risk, times) -> np.ndarray:
        """Survival curves ``S(t | x) = exp(-H0(t) exp(risk))``.

        Args:
            risk: (n,) log-risks.
            times: (T,) times >= 0 (any order).

        Returns:
            (n, T) survival probabilities, non-increasing in t for sorted ``times``.
        """
        r = _risk_array(risk)
        h0 = self.baseline_cum_hazard(times)
        return np.exp(-np.exp(r)[:, None] * h0[None, :])

    def survival_at(self, risk, horizons) -> np.ndarray:
        """Survival at fixed horizon(s).

        Args:
            risk: (n,) log-risks.
            horizons: a scalar horizon, or (T,) horizons.

        Returns:
            (n,) for a scalar horizon, else (n, T).
        """
        out = self.survival(risk, horizons)
        return out[:, 0] if np.ndim(horizons) == 0 else out

    def median_survival(self, risk) -> np.ndarray:
        """Predicted median survival time: the first event time with ``S(t | x) <= 0.5``.

        Args:
            risk: (n,) log-risks.

        Returns:
            (n,) medians; ``np.inf`` where the curve never reaches 0.5 within the training
            follow-up. ``inf`` (not NaN) is chosen so medians still sort and compare ("survives
            longer than anything observed"); use ``np.isfinite`` to select the defined ones.
        """
        self._fitted()
        s = self.survival(risk, self.event_times)  # (n, K), non-increasing along K
        reached = s <= 0.5
        first = reached.argmax(axis=1)
        return np.where(reached.any(axis=1), self.event_times[first], np.inf)

    # -------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        """JSON-able state: ``{"event_times": [...], "cum_hazard": [...]}`` (plain floats)."""
        self._fitted()
        return {"event_times": self.event_times.tolist(), "cum_hazard": self.cum_hazard.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "BreslowBaseline":
        """Rebuild from :meth:`state_dict` output (e.g. after ``json.loads``).

        Raises:
            ValueError: missing keys, unequal lengths, unsorted times or decreasing hazard.
        """
        for key in ("event_times", "cum_hazard"):
            if key not in state:
                raise ValueError(f"state is missing key {key!r}")
        return cls(state["event_times"], state["cum_hazard"])

    def _check_state(self) -> None:
        t, h = self.event_times, self.cum_hazard
        if t.ndim != 1 or h is None or h.shape != t.shape or len(t) == 0:
            raise ValueError("event_times and cum_hazard must be non-empty 1-D arrays of equal length")
        for name, arr in (("event_times", t), ("cum_hazard", h)):
            bad = ~np.isfinite(arr) | (arr < 0)
            if bad.any():
                raise ValueError(f"{name} must be finite and >= 0; first bad index {int(np.flatnonzero(bad)[0])}")
        if np.any(np.diff(t) <= 0):
            raise ValueError(f"event_times must be strictly increasing; first bad index {int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1}")
        if np.any(np.diff(h) < 0):
            raise ValueError(f"cum_hazard must be non-decreasing; first bad index {int(np.flatnonzero(np.diff(h) < 0)[0]) + 1}")
