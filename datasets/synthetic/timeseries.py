"""Render the time-series view ``v_ts`` into a long table of vital signs and labs over 48 hours.

Each variable is sampled by its own Poisson process on ``[0, 48]`` h (vitals every 1-3 h, labs
every 8-16 h). A measurement at time ``t`` is

    baseline + scale * u[level] + trend * u[slope] * t / 48 + noise

where ``u`` is the standardised view: one component sets the patient's level, another the
direction and size of the drift over the stay. That is ``signal="level_and_trend"`` (the default).
With ``signal="trend"`` each patient's level is drawn at random instead (``N(0, 1)`` per variable,
unrelated to the patient's state), so only how the values move over the stay carries the view:
a single observation says nothing, and an encoder has to relate observations of the same variable
at different times (deterioration, as clinicians read trends rather than one value).
"""

import numpy as np
import pandas as pd

HORIZON_HOURS = 48.0
SIGNALS = ("level_and_trend", "trend")

# name: (baseline, scale, trend, level component, trend component, mean interval (h), noise sd, min)
VARIABLES = {
    "heart_rate": (85.0, 12.0, 10.0, 0, 1, 1.0, 4.0, 30.0),
    "sbp": (120.0, 15.0, -12.0, 1, 2, 1.5, 6.0, 50.0),
    "resp_rate": (18.0, 3.5, 3.0, 2, 3, 2.0, 1.5, 6.0),
    "temperature": (37.0, 0.5, 0.4, 3, 4, 3.0, 0.2, 34.0),
    "lactate": (1.6, 0.6, 0.8, 4, 0, 12.0, 0.3, 0.3),
    "creatinine_lab": (1.1, 0.35, 0.3, 0, 2, 16.0, 0.1, 0.2),
}


def render_timeseries(
    u: np.ndarray, patient_ids, present: np.ndarray, rng: np.random.Generator, signal: str = "level_and_trend"
) -> pd.DataFrame:
    """Long event table for the patients who have the modality.

    Args:
        u: Standardised time-series view ``v_ts / sd``, shape ``(n, d)`` with ``d >= 5``.
        patient_ids: ``n`` patient ids (sortable strings, e.g. "P00001").
        present: Bool ``(n,)``, True where the patient has time series.
        rng: Source of randomness (the generator's "timeseries" stream).
        signal: ``"level_and_trend"`` or ``"trend"`` (module docstring).

    Returns:
        DataFrame ``patient_id, time, variable, value`` sorted by patient id then time; every
        present patient has at least one heart-rate measurement.
    """
    if signal not in SIGNALS:
        raise ValueError(f"time-series signal must be one of {SIGNALS}, got {signal!r}")
    ids = np.asarray(patient_ids, dtype=object)
    rows = np.flatnonzero(np.asarray(present, dtype=bool))
    pats, times, names, values = [], [], [], []
    for v, (name, (base, scale, trend, lvl, slope, interval, noise, low)) in enumerate(VARIABLES.items()):
        counts = rng.poisson(HORIZON_HOURS / interval, size=rows.size)
        if v == 0:
            counts = np.maximum(counts, 1)
        pat = np.repeat(rows, counts)
        t = np.round(rng.uniform(0.0, HORIZON_HOURS, size=pat.size), 3)
        if signal == "trend":  # a random level per patient (drawn after the default's draws of this variable)
            level = np.zeros(len(u))
            level[rows] = rng.standard_normal(rows.size)
            level = level[pat]
        else:
            level = u[pat, lvl]
        value = base + scale * level + trend * u[pat, slope] * t / HORIZON_HOURS
        value = np.maximum(value + noise * rng.standard_normal(pat.size), low)
        pats.append(pat)
        times.append(t)
        names.append(np.full(pat.size, v))
        values.append(np.round(value, 3))
    pat, t, var, value = (np.concatenate(x) for x in (pats, times, names, values))
    order = np.lexsort((var, t, pat))  # patient ids are zero-padded, so index order == id order
    return pd.DataFrame(
        {
            "patient_id": ids[pat[order]],
            "time": t[order],
            "variable": np.asarray(list(VARIABLES), dtype=object)[var[order]],
            "value": value[order],
        }
    )
