"""The synthetic cohort's ``ts_signal``: levels and trends, or trends only."""

import numpy as np

from clinfuse.datasets.synthetic.timeseries import render_timeseries

N = 600


def _per_patient(signal):
    rng = np.random.default_rng(5)
    u = rng.standard_normal((N, 5))
    ids = np.array([f"P{i:05d}" for i in range(N)], dtype=object)
    ts = render_timeseries(u, ids, np.ones(N, bool), np.random.default_rng(6), signal)
    hr = ts[ts["variable"] == "heart_rate"]
    level = hr.groupby("patient_id")["value"].mean().reindex(ids).to_numpy()

    def slope(g):
        return np.polyfit(g["time"], g["value"], 1)[0] if len(g) > 3 else np.nan

    slopes = hr.groupby("patient_id")[["time", "value"]].apply(slope).reindex(ids).to_numpy()
    return u, level, slopes


def _corr(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    return np.corrcoef(a[ok], b[ok])[0, 1]


def test_trend_signal_leaves_levels_random_and_keeps_the_drift():
    u, level, slopes = _per_patient("trend")
    assert abs(_corr(level, u[:, 0])) < 0.1  # the level component no longer shows
    assert _corr(slopes, u[:, 1]) > 0.5  # heart rate drifts with component 1
    u, level, slopes = _per_patient("level_and_trend")
    assert _corr(level, u[:, 0]) > 0.7 and _corr(slopes, u[:, 1]) > 0.5
