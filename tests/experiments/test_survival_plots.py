"""Survival plots: statistics must equal lifelines called directly; PNGs must be real images."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from clinfuse.experiments.survival_plots import calibration_plot, calibration_table, km_by_risk_group


def _cohort(n=300, seed=0, beta=1.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(1.0 / np.exp(beta * x))
    t_cens = rng.exponential(2.0, size=n)
    time = np.minimum(t_event, t_cens) + 1e-6
    event = (t_event <= t_cens).astype(int)
    return x, time, event


def _check_png(path):
    assert path.exists() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and img.shape[0] > 100 and img.shape[1] > 100


def test_km_p_value_equals_lifelines_and_png(tmp_path):
    x, time, event = _cohort()
    path = tmp_path / "km.png"
    fig, p = km_by_risk_group(x, time, event, n_groups=3, path=path)
    groups = pd.qcut(x, 3, labels=False)  # tertiles computed independently
    expected = multivariate_logrank_test(time, groups, event).p_value
    assert p == pytest.approx(expected, rel=1e-12)
    assert f"{p:.3g}" in fig.axes[0].get_title()
    _check_png(path)


def test_km_separating_vs_random():
    x, time, event = _cohort(seed=1)
    _, p_strong = km_by_risk_group(x, time, event)
    assert p_strong < 1e-3
    random_risk = np.random.default_rng(123).normal(size=len(x))
    _, p_random = km_by_risk_group(random_risk, time, event)
    assert p_random > 0.01


def test_km_no_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, time, event = _cohort(n=60)
    km_by_risk_group(x, time, event, n_groups=2)
    assert list(tmp_path.iterdir()) == []


def test_calibration_table_equals_km_per_bin(tmp_path):
    x, time, event = _cohort(seed=2)
    t = 0.5
    pred = np.exp(-0.5 * t * np.exp(1.5 * x))  # some survival-at-t prediction
    path = tmp_path / "cal.png"
    fig, table = calibration_plot(pred, time, event, t, n_bins=4, path=path)
    bins = pd.qcut(pred, 4, labels=False)
    assert list(table["n"]) == [int((bins == b).sum()) for b in range(4)]
    for b in range(4):
        m = bins == b
        kmf = KaplanMeierFitter().fit(time[m], event[m])
        sf = kmf.survival_function_.iloc[:, 0]
        assert table.loc[b, "observed"] == pytest.approx(sf[sf.index <= t].iloc[-1], abs=1e-12)
        assert table.loc[b, "predicted"] == pytest.approx(pred[m].mean())
        assert table.loc[b, "n_events"] == event[m].sum()
        assert table.loc[b, "observed_lower"] <= table.loc[b, "observed"] <= table.loc[b, "observed_upper"]
    _check_png(path)
    # the diagonal is drawn
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [0, 1])
    np.testing.assert_array_equal(line.get_ydata(), [0, 1])


def test_calibrated_model_is_close_to_diagonal():
    # true survival at t for the simulated hazard exp(1.5 x) with baseline hazard 1
    x, time, event = _cohort(n=2000, seed=3)
    t = 0.5
    table = calibration_table(np.exp(-t * np.exp(1.5 * x)), time, event, t, n_bins=5)
    assert np.max(np.abs(table["observed"] - table["predicted"])) < 0.06


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pred": [0.5, 1.5, 0.2, 0.3]}, "pred_surv_at_t.*index 1"),
        ({"pred": [0.5, 0.6]}, "pred_surv_at_t must be 1-D with length 4"),
        ({"time": [1.0, -1.0, 2.0, 3.0]}, "time.*index 1"),
        ({"event": [1, 0, 3, 1]}, "event.*index 2"),
        ({"t": 0.0}, "t must be"),
        ({"n_bins": 1}, "n_bins must be an integer"),
        ({"pred": [0.5, 0.5, 0.5, 0.5]}, "tied"),
    ],
)
def test_calibration_validation(kwargs, match):
    args = {"pred": [0.1, 0.4, 0.6, 0.9], "time": [1.0, 2.0, 3.0, 4.0], "event": [1, 0, 1, 1], "t": 2.0, "n_bins": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calibration_table(np.array(args["pred"]), np.array(args["time"]), np.array(args["event"]), args["t"], args["n_bins"])


def test_km_validation():
    with pytest.raises(ValueError, match="risk.*index 0"):
        km_by_risk_group([np.nan, 1.0, 2.0], [1.0, 2.0, 3.0], [1, 1, 0], n_groups=2)
    with pytest.raises(ValueError, match="n_groups"):
        km_by_risk_group([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [1, 1, 0], n_groups=1)
    with pytest.raises(ValueError, match="fewer than"):
        km_by_risk_group([0.0, 1.0], [1.0, 2.0], [1, 1], n_groups=3)
