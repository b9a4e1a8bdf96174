"""Breslow baseline: must equal scikit-survival's and lifelines' Cox survival curves."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sksurv.datasets import load_veterans_lung_cancer
from sksurv.linear_model import CoxPHSurvivalAnalysis

from clinfuse.experiments.survival_curves import BreslowBaseline

COLS = ["Age_in_years", "Karnofsky_score", "Months_from_Diagnosis"]


@pytest.fixture(scope="module")
def veterans():
    X, y = load_veterans_lung_cancer()
    X = X[COLS].to_numpy(float)
    return X, y["Survival_in_days"].astype(float), y["Status"].astype(bool), y


@pytest.fixture(scope="module")
def sk_cox(veterans):
    X, _, _, y = veterans
    return CoxPHSurvivalAnalysis(ties="breslow").fit(X, y)


def test_matches_sksurv_survival_function(veterans, sk_cox):
    X, time, event, _ = veterans
    risk = sk_cox.predict(X)
    base = BreslowBaseline().fit(risk, time, event)
    times = np.unique(time)  # censoring and event times, within sksurv's domain
    expected = sk_cox.predict_survival_function(X, return_array=True)  # at sk_cox.unique_times_
    np.testing.assert_allclose(sk_cox.unique_times_, times)
    np.testing.assert_allclose(base.survival(risk, times), expected, rtol=0, atol=1e-6)
    # between grid points too (step function is right-continuous)
    mid = (times[:-1] + times[1:]) / 2
    sk_mid = np.stack([f(mid) for f in sk_cox.predict_survival_function(X)])
    np.testing.assert_allclose(base.survival(risk, mid), sk_mid, rtol=0, atol=1e-6)


def test_matches_lifelines_breslow(veterans):
    X, time, event, _ = veterans
    df = pd.DataFrame(X, columns=COLS).assign(T=time, E=event.astype(int))
    cph = CoxPHFitter(baseline_estimation_method="breslow").fit(df, "T", "E")
    beta = cph.params_[COLS].to_numpy()
    risk = X @ beta  # uncentred linear predictor
    base = BreslowBaseline().fit(risk, time, event)
    times = np.array([10.0, 50.0, 100.0, 250.0, 500.0])
    # lifelines' baseline is at the covariate means: H_lifelines(t) = H0(t) * exp(mean @ beta)
    lif_h = cph.baseline_cumulative_hazard_.iloc[:, 0]
    lif_at = np.array([lif_h[lif_h.index <= t].iloc[-1] for t in times])
    ours = base.baseline_cum_hazard(times) * np.exp(X.mean(0) @ beta)
    np.testing.assert_allclose(ours, lif_at, rtol=1e-6)
    # lifelines interpolates LINEARLY between its grid points when given `times`, so compare the
    # full curves only on its own grid (the observed times), where both are exact step values.
    grid = cph.baseline_cumulative_hazard_.index.to_numpy()
    lif_s = cph.predict_survival_function(df[COLS]).to_numpy().T
    np.testing.assert_allclose(base.survival(risk, grid), lif_s, atol=1e-6)


def test_monotone_and_bounds(veterans, sk_cox):
    X, time, event, _ = veterans
    base = BreslowBaseline().fit(sk_cox.predict(X), time, event)
    grid = np.linspace(0, time.max() * 1.5, 300)
    s = base.survival(sk_cox.predict(X), grid)
    assert s.shape == (len(X), 300)
    assert np.all(np.diff(s, axis=1) <= 1e-15)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s[:, 0], 1.0)  # H0(0) = 0
    assert np.all(np.diff(base.cum_hazard) >= 0)
    assert set(base.event_times) == set(np.unique(time[event]))


def test_tiny_by_hand_and_median():
    # risk 0 everywhere -> Breslow = Nelson-Aalen: times 1,2,3,4 all events, 4 at risk.
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1])
    base = BreslowBaseline().fit(np.zeros(4), time, event)
    np.testing.assert_allclose(base.event_times, [1.0, 2.0, 4.0])
    np.testing.assert_allclose(base.cum_hazard, [1 / 4, 1 / 4 + 1 / 3, 1 / 4 + 1 / 3 + 1])
    # S at risk 0: exp(-.25)=.78, exp(-.583)=.558, exp(-1.583)=.205 -> median 4
    # at risk log(2): exp(-.5)=.607, exp(-1.167)=.311 -> median 2
    # at risk -5: S(4)=exp(-1.583*e^-5)=.989 -> never reached -> inf
    med = base.median_survival(np.array([0.0, np.log(2), -5.0]))
    np.testing.assert_array_equal(med, [4.0, 2.0, np.inf])
    np.testing.assert_allclose(base.survival_at(np.zeros(2), 2.5), np.exp(-(1 / 4 + 1 / 3)))
    assert base.survival_at(np.zeros(2), [1.0, 2.5]).shape == (2, 2)
    np.testing.assert_allclose(base.baseline_cum_hazard([0.5, 1.0, 3.9, 100.0]), [0, 0.25, 7 / 12, 19 / 12])


def test_state_round_trip(veterans, sk_cox):
    X, time, event, _ = veterans
    risk = sk_cox.predict(X)
    base = BreslowBaseline().fit(risk, time, event)
    back = BreslowBaseline.from_state(json.loads(json.dumps(base.state_dict())))
    grid = np.linspace(0, 1000, 57)
    np.testing.assert_array_equal(back.survival(risk, grid), base.survival(risk, grid))
    np.testing.assert_array_equal(back.median_survival(risk), base.median_survival(risk))


@pytest.mark.parametrize(
    "risk, time, event, match",
    [
        ([0.0, 0.0], [1.0, 0.0], [1, 1], "time.*index 1"),
        ([0.0, 0.0], [1.0, np.nan], [1, 1], "time.*index 1"),
        ([0.0, 0.0], [1.0, -2.0], [1, 1], "time.*index 1"),
        ([0.0, 0.0], [1.0, 2.0], [1, 2], "event.*index 1"),
        ([0.0, np.inf], [1.0, 2.0], [1, 1], "risk.*index 1"),
        ([0.0], [1.0, 2.0], [1, 1], "risk"),
        ([0.0, 0.0], [1.0, 2.0], [1], "equal lengths"),
        ([0.0, 0.0], [1.0, 2.0], [0, 0], "no events"),
    ],
)
def test_validation(risk, time, event, match):
    with pytest.raises(ValueError, match=match):
        BreslowBaseline().fit(np.array(risk), np.array(time), np.array(event))


def test_bad_state_and_unfitted():
    with pytest.raises(ValueError, match="not fitted"):
        BreslowBaseline().survival([0.0], [1.0])
    with pytest.raises(ValueError, match="cum_hazard"):
        BreslowBaseline.from_state({"event_times": [1.0]})
    with pytest.raises(ValueError, match="event_times must be strictly increasing"):
        BreslowBaseline.from_state({"event_times": [2.0, 1.0], "cum_hazard": [0.1, 0.2]})
    with pytest.raises(ValueError, match="cum_hazard must be non-decreasing"):
        BreslowBaseline.from_state({"event_times": [1.0, 2.0], "cum_hazard": [0.3, 0.2]})
    base = BreslowBaseline.from_state({"event_times": [1.0], "cum_hazard": [0.1]})
    with pytest.raises(ValueError, match="times.*index 0"):
        base.survival([0.0], [-1.0])


def test_median_is_the_first_time_where_s_reaches_exactly_one_half():
    base = BreslowBaseline(event_times=[1.0, 2.0], cum_hazard=[np.log(2.0), 1.0])
    assert base.survival([0.0], [1.0])[0, 0] == 0.5  # exp(-log 2) is exactly 0.5 in float64
    np.testing.assert_array_equal(base.median_survival(np.array([0.0])), [1.0])
