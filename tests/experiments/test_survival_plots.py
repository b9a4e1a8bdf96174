"""Survival plots: statistics must equal lifelines called directly; PNGs must be real images."""

from __future__ import annotations

import re

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test

from clinfuse.experiments.survival_plots import calibration_plot, calibration_table, km_by_risk_group, risk_groups


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


# --- tied predictions (e.g. every patient without genomics gets the same one): fewer groups, no error ----


def _ordered(values, groups):
    """Groups are ordered by value and tied values share a group."""
    for v in np.unique(values):
        assert len(set(groups[values == v])) == 1, f"ties at {v} split over groups {set(groups[values == v])}"
    order = np.argsort(values, kind="stable")
    assert (np.diff(groups[order]) >= 0).all()


def test_risk_groups_keep_a_large_tied_block_together():
    # 42 of 100 patients tied in the middle: qcut's tertile edges coincide; 3 groups are still possible
    rng = np.random.default_rng(0)
    risk = np.r_[np.full(42, 0.0), -rng.uniform(0.1, 1, 29), rng.uniform(0.1, 1, 29)]
    with pytest.raises(ValueError):
        pd.qcut(risk, 3, labels=False)  # what used to fail
    groups = risk_groups(risk, 3)
    _ordered(risk, groups)
    assert np.bincount(groups).tolist() == [29, 42, 29]
    assert (groups[risk == 0.0] == 1).all() and (groups[risk < 0] == 0).all() and (groups[risk > 0] == 2).all()


def test_risk_groups_split_the_rest_evenly_around_a_tied_block():
    # 60 tied at the lowest value: it is one group, the 40 others share the remaining groups evenly
    risk = np.r_[np.zeros(60), np.arange(1.0, 41.0)]
    for n_groups, sizes in [(3, [60, 20, 20]), (5, [60, 10, 10, 10, 10])]:
        groups = risk_groups(risk, n_groups)
        _ordered(risk, groups)
        assert np.bincount(groups).tolist() == sizes
        assert (groups[:60] == 0).all()
    # two distinct values: only two groups can be formed, whatever is asked for
    two = np.r_[np.zeros(5), np.ones(7)]
    np.testing.assert_array_equal(risk_groups(two, 4), (two == 1).astype(int))


def test_risk_groups_without_ties_are_pandas_qcut():
    x = np.random.default_rng(4).normal(size=101)
    np.testing.assert_array_equal(risk_groups(x, 3), pd.qcut(x, 3, labels=False))


def test_km_with_constant_risk_is_one_group_with_a_figure(tmp_path):
    _, time, event = _cohort(n=80, seed=5)
    path = tmp_path / "km.png"
    fig, p = km_by_risk_group(np.full(80, 0.3), time, event, n_groups=3, path=path)
    assert np.isnan(p)  # nothing to compare
    ax = fig.axes[0]
    assert "(1 of 3 groups: ties kept together)" in ax.get_title()
    assert "one group, nothing to compare" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all patients (risks tied) (n=80)"]
    _check_png(path)


def test_km_with_heavily_tied_risk_uses_the_groups_formed(tmp_path):
    # 42% tied at the lowest risk: tertiles are impossible; the tied block is one group, the rest two
    x, time, event = _cohort(n=200, seed=6)
    risk = x.copy()
    risk[np.argsort(x)[:84]] = x.min()
    path = tmp_path / "km.png"
    fig, p = km_by_risk_group(risk, time, event, n_groups=3, path=path)
    groups = risk_groups(risk, 3)
    assert np.bincount(groups).tolist() == [84, 58, 58]
    assert p == pytest.approx(multivariate_logrank_test(time, groups, event).p_value, rel=1e-12)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["lowest risk (n=84)", "risk group 2 (n=58)", "highest risk (n=58)"]
    assert "(3 unequal groups: ties kept together)" in fig.axes[0].get_title()
    _check_png(path)


def test_calibration_with_tied_predictions_keeps_them_in_one_bin(tmp_path):
    # 84 of 200 patients share one prediction (no genomics): quintile bins are impossible; the tied
    # block is one bin and the others split evenly below and above it
    x, time, event = _cohort(n=200, seed=7)
    t = 0.5
    pred = np.exp(-t * np.exp(1.5 * x))
    order = np.argsort(pred)
    pred[order[58:142]] = pred[order[100]]
    path = tmp_path / "cal.png"
    fig, table = calibration_plot(pred, time, event, t, n_bins=5, path=path)
    assert list(table["n"]) == [29, 29, 84, 29, 29] and list(table["bin"]) == [0, 1, 2, 3, 4]
    bins = risk_groups(pred, 5)
    _ordered(pred, bins)
    assert (bins[order[58:142]] == 2).all()
    for b in range(5):  # every bin is still Kaplan-Meier of its own patients
        m = bins == b
        assert table.loc[b, "observed"] == pytest.approx(KaplanMeierFitter().fit(time[m], event[m]).predict(t))
        assert table.loc[b, "predicted"] == pytest.approx(pred[m].mean())
    assert "(5 unequal bins: ties kept together)" in fig.axes[0].get_title()
    _check_png(path)


def test_calibration_with_few_distinct_predictions_forms_fewer_bins(tmp_path):
    _, time, event = _cohort(n=200, seed=8)
    t = 0.5
    pred = np.repeat([0.2, 0.5, 0.8], [50, 90, 60])  # three distinct predictions: at most three bins
    fig, table = calibration_plot(pred, time, event, t, n_bins=5, path=tmp_path / "cal.png")
    assert list(table["n"]) == [50, 90, 60]
    np.testing.assert_allclose(table["predicted"], [0.2, 0.5, 0.8])
    assert "(3 of 5 bins: ties kept together)" in fig.axes[0].get_title()
    _check_png(tmp_path / "cal.png")
    # every prediction the same: one bin, the whole split
    _, one = calibration_plot(np.full(200, 0.5), time, event, t, n_bins=5)
    assert list(one["n"]) == [200]
    assert one.loc[0, "observed"] == pytest.approx(KaplanMeierFitter().fit(time, event).predict(t))


# --- saving: the format the suffix names; a missing folder is an error naming it --------------------


def _plots(path):
    """Every plot function that saves through ``path``, called on one cohort."""
    x, time, event = _cohort(n=120, seed=9)
    t = 0.5
    return [lambda: km_by_risk_group(x, time, event, n_groups=3, path=path),
            lambda: calibration_plot(np.exp(-t * np.exp(1.5 * x)), time, event, t, n_bins=3, path=path)]


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF-"), (".svg", b"<svg"), (".PNG", b"\x89PNG\r\n\x1a\n")])
def test_plots_write_the_format_the_suffix_names(tmp_path, suffix, magic):
    for k in range(2):
        path = tmp_path / f"fig{k}{suffix}"
        _plots(path)[k]()
        head = path.read_bytes()[:2000]
        assert (magic in head) if suffix == ".svg" else head.startswith(magic)
        if suffix == ".PNG":
            _check_png(path)


@pytest.mark.parametrize("name", ["fig.jpg", "fig", "fig.png.txt"])
def test_plots_refuse_a_suffix_they_do_not_write(tmp_path, name):
    for plot in _plots(tmp_path / name):
        with pytest.raises(ValueError, match=r"path must end in one of \('\.png', '\.pdf', '\.svg'\).*" + re.escape(name)):
            plot()
    assert list(tmp_path.iterdir()) == []


def test_plots_refuse_a_missing_folder_naming_it(tmp_path):
    missing = tmp_path / "no_such_folder"
    for plot in _plots(missing / "fig.png"):
        with pytest.raises(ValueError, match=f"folder of path does not exist: '{re.escape(str(missing))}'"):
            plot()
    assert not missing.exists()  # not created behind the user's back


def test_figure_labels_name_the_unit_the_patients_and_n():
    from clinfuse.experiments.survival_report import short_time_unit

    rng = np.random.default_rng(0)
    time, event, risk = rng.exponential(100, 60) + 1, rng.integers(0, 2, 60), rng.normal(size=60)
    fig, _ = km_by_risk_group(risk, time, event, time_unit="days", what="test split")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (days)" and ax.get_title().startswith("test split, n = 60: Kaplan-Meier")
    surv = np.clip(np.exp(-time / 200), 0, 1)
    fig, _ = calibration_plot(surv, time, event, 80.0, time_unit="days", what="test split; t = its median follow-up")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted survival at t = 80 days"
    assert "(test split; t = its median follow-up, n = 60)" in ax.get_title()
    assert short_time_unit("modality times: hours from ICU intime; survival time: days from the prediction time") == "days"
    assert short_time_unit("hours from the ECG recording (the index time); no survival labels") is None
