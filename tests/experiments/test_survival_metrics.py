"""Survival metrics: our wrappers must equal scikit-survival called directly, and add what it lacks."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index
from sksurv.datasets import load_gbsg2
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from clinfuse.experiments.survival_metrics import (
    SurvivalData,
    bootstrap_ci,
    brier_scores,
    d_calibration,
    evaluation_times,
    integrated_brier,
    survival_report,
    time_dependent_auc,
    to_structured,
    uno_c_index,
)


@pytest.fixture(scope="module")
def gbsg():
    X, y = load_gbsg2()
    X = X[["age", "estrec", "pnodes", "progrec", "tsize"]].to_numpy(float)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, te = idx[:450], idx[450:]
    t, e = y["time"].astype(float), y["cens"].astype(bool)
    model = CoxPHSurvivalAnalysis().fit(X[tr], Surv.from_arrays(e[tr], t[tr]))
    risk = model.predict(X[te])
    fns = model.predict_survival_function(X[te])

    def surv_fn(times):
        return np.stack([f(times) for f in fns])

    return dict(tt=t[tr], te_=e[tr], st=t[te], se=e[te], risk=risk, surv_fn=surv_fn)


def _y(t, e):
    return Surv.from_arrays(e, t)


def test_structured_array_roundtrip():
    y = to_structured(np.array([1.0, 2.0]), np.array([1, 0]))
    assert y.dtype.names == ("event", "time") and y["event"].tolist() == [True, False]
    d = SurvivalData.from_structured(y)
    np.testing.assert_array_equal(d.time, [1.0, 2.0])


@pytest.mark.parametrize(
    "time, event, msg",
    [
        ([1.0, 0.0, 2.0], [1, 0, 1], r"train_time .* index 1"),
        ([1.0, 2.0, np.inf], [1, 0, 1], r"train_time .* index 2"),
        ([1.0, 2.0, np.nan], [1, 0, 1], r"train_time .* index 2"),
        ([1.0, 2.0, 3.0], [1, 2, 1], r"train_event .* index 1"),
        ([1.0, 2.0, 3.0], [1, 0], r"train_time and train_event .* equal lengths"),
    ],
)
def test_bad_inputs_name_array_and_index(time, event, msg):
    with pytest.raises(ValueError, match=msg):
        SurvivalData(np.array(time), np.array(event), "train")


def test_bad_risk_and_d_calibration_inputs(gbsg):
    g = gbsg
    risk = g["risk"].copy()
    risk[3] = np.nan
    with pytest.raises(ValueError, match=r"risk .* index 3"):
        uno_c_index((g["tt"], g["te_"]), (g["st"], g["se"]), risk)
    with pytest.raises(ValueError, match=r"surv_at_time .* index 1"):
        d_calibration(np.array([0.5, 1.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match=r"event .* index 0"):
        d_calibration(np.array([0.5, 0.2]), np.array([3, 1]))


def test_grid_is_inside_follow_up(gbsg):
    g = gbsg
    times = evaluation_times(g["tt"], g["te_"], g["st"], g["se"], n=20)
    assert len(times) == 20 and np.all(np.diff(times) > 0)
    assert times.min() >= max(g["st"][g["se"]].min(), g["tt"].min())
    assert times.max() < g["st"].max() and times.max() < g["tt"].max()
    np.testing.assert_allclose(times[[0, -1]], np.quantile(g["st"], [0.1, 0.9]))  # no clipping needed here


def test_wrappers_equal_sksurv_directly(gbsg):
    g = gbsg
    ytr, yte = _y(g["tt"], g["te_"]), _y(g["st"], g["se"])
    times = evaluation_times(g["tt"], g["te_"], g["st"], g["se"])
    tau = float(times[-1])
    assert uno_c_index((g["tt"], g["te_"]), yte, g["risk"], tau=tau) == concordance_index_ipcw(ytr, yte, g["risk"], tau=tau)[0]
    auc, mean_auc = time_dependent_auc(ytr, yte, g["risk"], times)
    ref_auc, ref_mean = cumulative_dynamic_auc(ytr, yte, g["risk"], times)
    np.testing.assert_array_equal(auc, ref_auc)
    assert mean_auc == ref_mean and 0.6 < mean_auc < 0.8
    surv = g["surv_fn"](times)
    np.testing.assert_array_equal(brier_scores(ytr, yte, surv, times), brier_score(ytr, yte, surv, times)[1])
    ibs = integrated_brier(ytr, yte, surv, times)
    assert ibs == integrated_brier_score(ytr, yte, surv, times) and 0.1 < ibs < 0.25


def test_grid_clipping_avoids_sksurv_error(gbsg):
    g = gbsg
    keep = g["st"] < 1500  # test follow-up ends well before train follow-up
    st, se, risk = g["st"][keep], g["se"][keep], g["risk"][keep]
    ytr, yte = _y(g["tt"], g["te_"]), _y(st, se)
    naive = np.linspace(np.quantile(g["tt"], 0.1), np.quantile(g["tt"], 0.95), 20)  # train-based grid
    assert naive.max() >= st.max()
    with pytest.raises(ValueError, match="follow-up time of test data"):
        cumulative_dynamic_auc(ytr, yte, risk, naive)
    with pytest.raises(ValueError, match="follow-up time of test data"):  # max test time itself is excluded
        cumulative_dynamic_auc(ytr, yte, risk, np.linspace(st.min(), st.max(), 5))
    times = evaluation_times(g["tt"], g["te_"], st, se, quantiles=(0.0, 1.0))
    assert times.max() == np.unique(st)[-2] and times.min() == st[se].min()
    auc, mean_auc = time_dependent_auc(ytr, yte, risk, times)
    assert np.isfinite(mean_auc) and mean_auc == cumulative_dynamic_auc(ytr, yte, risk, times)[1]
    assert np.isfinite(integrated_brier(ytr, yte, g["surv_fn"](times)[keep], times))


def test_grid_rejects_non_overlapping_follow_up():
    with pytest.raises(ValueError, match="do not overlap"):
        evaluation_times(np.array([1.0, 2.0, 3.0]), np.ones(3), np.array([10.0, 11.0, 12.0]), np.ones(3))
    with pytest.raises(ValueError, match="test_event has no events"):
        evaluation_times(np.array([1.0, 2.0, 3.0]), np.ones(3), np.array([1.0, 2.0, 3.0]), np.zeros(3))


def test_d_calibration_censored_spreading_by_hand():
    # 4 bins. Event at S=0.6 -> bin 2. Censored at S=0.6 -> bin 2 gets (0.6-0.5)/0.6 = 1/6,
    # bins 0 and 1 get 0.25/0.6 = 5/12 each. Censored at S=0.2 -> bin 0 gets 1. Event at S=1 -> bin 3.
    out = d_calibration(np.array([0.6, 0.6, 0.2, 1.0]), np.array([1, 0, 0, 1]), n_bins=4)
    np.testing.assert_allclose(out["bin_counts"], [1 + 5 / 12, 5 / 12, 1 + 1 / 6, 1.0])
    assert out["bin_counts"].sum() == pytest.approx(4.0)


def _exp_cohort(n, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rate = np.exp(0.8 * x)
    t_event = rng.exponential(1 / rate)
    t_cens = rng.exponential(2.0, size=n)
    t = np.minimum(t_event, t_cens)
    e = (t_event <= t_cens).astype(int)
    return np.exp(-scale * rate * t), e  # predicted S(t_i) under a model with hazard scale * true


def test_d_calibration_calibrated_vs_misscaled():
    s, e = _exp_cohort(2000, seed=1, scale=1.0)
    assert d_calibration(s, e)["p_value"] > 0.05
    s, e = _exp_cohort(2000, seed=1, scale=2.5)
    assert d_calibration(s, e)["p_value"] < 0.01


def _harrell(t, e, r):
    return concordance_index_censored(e.astype(bool), t, r)[0]


def _fast_c(t, e, r):  # O(n log n) Harrell C (lifelines) so the big bootstrap stays fast
    return concordance_index(t, -r, e)


def test_bootstrap_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)

    def cohort(n):
        x = rng.normal(size=n)
        t = rng.exponential(1 / np.exp(x))
        return t, (rng.random(n) < 0.7).astype(int), x

    small = bootstrap_ci(_fast_c, *cohort(80), n_boot=100)
    large = bootstrap_ci(_fast_c, *cohort(1200), n_boot=100)
    for est, lo, hi in (small, large):
        assert lo <= est <= hi
    assert (large[2] - large[1]) < 0.5 * (small[2] - small[1])
    assert small.n_skipped == 0
    data = cohort(80)
    assert bootstrap_ci(_harrell, *data, n_boot=50, seed=3) == bootstrap_ci(_harrell, *data, n_boot=50, seed=3)


def test_bootstrap_skips_undefined_and_reports():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    e = np.array([1, 0, 0, 0])  # one event: many resamples have no event -> undefined

    def metric(t, e):
        if e.sum() == 0:
            return float("nan")
        if len(np.unique(t)) < 2:
            raise ValueError("undefined")
        return float(t.mean())

    with pytest.warns(UserWarning, match="skipped"):
        ci = bootstrap_ci(metric, t, e, n_boot=100)
    assert 0 < ci.n_skipped < 100 and ci[0] == 2.5
    with pytest.raises(ValueError, match=r"arrays\[1\]"):
        bootstrap_ci(metric, t, e[:3])


def test_survival_report(gbsg):
    g = gbsg
    rep = survival_report(g["tt"], g["te_"], g["st"], g["se"], g["risk"], g["surv_fn"], n_boot=50)
    ytr, yte = _y(g["tt"], g["te_"]), _y(g["st"], g["se"])
    times = evaluation_times(g["tt"], g["te_"], g["st"], g["se"])
    assert rep["harrell"] == _harrell(g["st"], g["se"], g["risk"])
    assert rep["uno"] == concordance_index_ipcw(ytr, yte, g["risk"], tau=times[-1])[0]
    assert rep["mean_td_auc"] == cumulative_dynamic_auc(ytr, yte, g["risk"], times)[1]
    assert rep["ibs"] == integrated_brier_score(ytr, yte, g["surv_fn"](times), times)
    for k in ("harrell", "uno"):
        assert rep[f"{k}_low"] <= rep[k] <= rep[f"{k}_high"]
    assert 0.0 <= rep["d_calibration_p"] <= 1.0
    no_curves = survival_report(g["tt"], g["te_"], g["st"], g["se"], g["risk"], n_boot=10)
    assert np.isnan(no_curves["ibs"]) and np.isnan(no_curves["d_calibration_p"])


def _censoring_survival(train_t, train_e):
    """G: the Kaplan-Meier of the training censoring times (lifelines), as a function."""
    from lifelines import KaplanMeierFitter

    sf = KaplanMeierFitter().fit(train_t, 1 - train_e).survival_function_["KM_estimate"]
    return lambda x: float(sf[sf.index <= x].iloc[-1]) if (sf.index <= x).any() else 1.0


def _hand_brier(train_t, train_e, test_t, test_e, surv, t):
    """IPCW Brier score at ``t`` from its definition (Graf et al.)."""
    g = _censoring_survival(train_t, train_e)
    case, control = (test_t <= t) & (test_e == 1), test_t > t
    return np.mean([surv[i] ** 2 / g(test_t[i]) if case[i] else (1 - surv[i]) ** 2 / g(t) if control[i] else 0.0
                    for i in range(len(test_t))])


def _hand_cd_auc(train_t, train_e, test_t, test_e, risk, t):
    """Cumulative/dynamic AUC at ``t`` from its definition: cases (event by t) weighted by 1 / G(T_i)."""
    g = _censoring_survival(train_t, train_e)
    cases = np.flatnonzero((test_t <= t) & (test_e == 1))
    controls = np.flatnonzero(test_t > t)
    num = sum((1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0) / g(test_t[i])
              for i in cases for j in controls)
    return num / (sum(1 / g(test_t[i]) for i in cases) * len(controls))


def test_ipcw_metrics_with_a_test_event_after_every_training_time():
    rng = np.random.default_rng(7)
    train_t, train_e = rng.uniform(1, 100, 80), rng.integers(0, 2, 80)  # untied: both KMs agree on ties otherwise
    test_t, test_e = rng.uniform(1, 100, 60), rng.integers(0, 2, 60)
    test_t[0], test_e[0] = 150.0, 1  # an event later than every training time: sksurv alone raises
    risk = -test_t + rng.normal(0, 20, 60)
    train, test = SurvivalData(train_t, train_e, "train"), SurvivalData(test_t, test_e, "test")
    times = evaluation_times(train_t, train_e, test_t, test_e, n=5)
    with pytest.raises(ValueError, match="smaller than largest observed time"):
        cumulative_dynamic_auc(train.structured, test.structured, risk, times)
    auc, mean_auc = time_dependent_auc(train, test, risk, times)
    for k, t in enumerate(times):
        assert auc[k] == pytest.approx(_hand_cd_auc(train_t, train_e, test_t, test_e, risk, t), rel=1e-9)
    surv = np.clip(np.exp(-np.outer(np.exp(risk / 50), times) / 100), 0, 1)
    bs = brier_scores(train, test, surv, times)
    test_t[1], test_e[1] = 120.0, 0  # also a censored time past every training time (Brier weights it too)
    test = SurvivalData(test_t, test_e, "test")
    bs = brier_scores(train, test, surv, times)
    for k, t in enumerate(times):
        assert bs[k] == pytest.approx(_hand_brier(train_t, train_e, test_t, test_e, surv[:, k], t), rel=1e-9)
    assert np.isfinite(bs).all() and np.isfinite(integrated_brier(train, test, surv, times)) and np.isfinite(mean_auc)
    report = survival_report(train_t, train_e, test_t, test_e, risk, n_boot=20)
    assert np.isfinite(report["mean_td_auc"]) and np.isfinite(report["harrell"])


def test_harrell_without_a_comparable_pair_is_nan():
    from clinfuse.experiments.metrics import harrell_c_index

    assert np.isnan(harrell_c_index(np.array([0.1, 0.5, 0.2]), np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1])))
    assert harrell_c_index(np.array([0.1, 0.5, 0.2]), np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1])) == 1.0


# --- Brier inputs: times strictly increasing, probabilities in [0, 1] -------------------------------


def test_brier_refuses_unsorted_times_that_sksurv_would_mispair(gbsg):
    g = gbsg
    ytr, yte = _y(g["tt"], g["te_"]), _y(g["st"], g["se"])
    times = evaluation_times(g["tt"], g["te_"], g["st"], g["se"])
    surv = g["surv_fn"](times)
    # reversing times and columns together describes the same predictions; sksurv sorts the times
    # but not the columns, so it pairs them wrongly: refused, never a different number
    for fn in (brier_scores, integrated_brier):
        with pytest.raises(ValueError, match=r"times must be strictly increasing.*first bad index 1"):
            fn(ytr, yte, surv[:, ::-1], times[::-1])
        with pytest.raises(ValueError, match=r"times must be strictly increasing.*first bad index 3"):
            fn(ytr, yte, surv[:, [0, 1, 2, 2]], times[[0, 1, 2, 2]])  # a repeated time
        with pytest.raises(ValueError, match=r"times must be finite; first bad index 2"):
            fn(ytr, yte, surv[:, :3], np.r_[times[:2], np.nan])
        with pytest.raises(ValueError, match=r"times must be a non-empty 1-D array"):
            fn(ytr, yte, surv[:, :0], times[:0])
    assert integrated_brier(ytr, yte, surv, times) == integrated_brier_score(ytr, yte, surv, times)


@pytest.mark.parametrize(
    "row, col, value",
    [(2, 3, np.nan), (5, 0, 1.2), (0, 7, -0.1), (9, 1, np.inf)],
)
def test_brier_refuses_probabilities_outside_unit_interval(gbsg, row, col, value):
    g = gbsg
    ytr, yte = _y(g["tt"], g["te_"]), _y(g["st"], g["se"])
    times = evaluation_times(g["tt"], g["te_"], g["st"], g["se"])
    surv = g["surv_fn"](times).copy()
    surv[row, col] = value
    for fn in (brier_scores, integrated_brier):
        with pytest.raises(ValueError, match=rf"surv_probs must be finite survival probabilities in \[0, 1\]; "
                                             rf"first bad row {row}, column {col}"):
            fn(ytr, yte, surv, times)
        with pytest.raises(ValueError, match=rf"surv_probs must have shape \({len(surv)}, {len(times)}\)"):
            fn(ytr, yte, g["surv_fn"](times)[:, 1:], times)


def test_rounding_excursions_past_the_unit_interval_are_clipped(gbsg):
    g = gbsg
    ytr, yte = _y(g["tt"], g["te_"]), _y(g["st"], g["se"])
    times = evaluation_times(g["tt"], g["te_"], g["st"], g["se"])
    surv = g["surv_fn"](times).copy()
    surv[0, 0], surv[1, -1] = 1.0, 0.0
    nudged = surv.copy()
    nudged[0, 0], nudged[1, -1] = 1.0 + 1e-9, -1e-9  # float32 read-outs can land one ulp outside
    assert integrated_brier(ytr, yte, nudged, times) == integrated_brier(ytr, yte, surv, times)


def test_integrated_brier_is_the_trapezoid_of_hand_brier_scores():
    rng = np.random.default_rng(11)
    train_t, train_e = rng.uniform(1, 100, 80), rng.integers(0, 2, 80)
    test_t, test_e = rng.uniform(1, 100, 60), rng.integers(0, 2, 60)
    risk = -test_t + rng.normal(0, 20, 60)
    times = evaluation_times(train_t, train_e, test_t, test_e, n=6)
    surv = np.exp(-np.outer(np.exp(risk / 50), times) / 100)
    hand = np.array([_hand_brier(train_t, train_e, test_t, test_e, surv[:, k], t) for k, t in enumerate(times)])
    want = np.sum(np.diff(times) * (hand[1:] + hand[:-1]) / 2) / (times[-1] - times[0])
    assert integrated_brier((train_t, train_e), (test_t, test_e), surv, times) == pytest.approx(want, rel=1e-9)


def test_survival_report_refuses_survival_above_one_on_the_grid(gbsg):
    g = gbsg
    args = (g["tt"], g["te_"], g["st"], g["se"], g["risk"])
    with pytest.raises(ValueError, match=r"surv_fn\(evaluation times\) must be finite .* first bad row \d+, column \d+"):
        survival_report(*args, lambda t: g["surv_fn"](t) * 1.05, n_boot=5)  # > 1 where S is near 1


def test_survival_report_refuses_survival_above_one_for_d_calibration(gbsg):
    # used to be clipped to [0, 1] silently before the D-calibration test
    g = gbsg
    args = (g["tt"], g["te_"], g["st"], g["se"], g["risk"])
    first = evaluation_times(g["tt"], g["te_"], g["st"], g["se"])[0]

    def above_one_before_the_grid(t):  # fine on the evaluation grid (IBS), > 1 at the earliest test times
        return g["surv_fn"](t) + 0.5 * (np.asarray(t) < first)[None, :]

    with pytest.raises(ValueError, match=r"surv_fn\(test times\) must be finite .* first bad row \d+, column 0 "):
        survival_report(*args, above_one_before_the_grid, n_boot=5)


def test_time_dependent_auc_with_crossing_curves_scores_each_time_by_its_own_survival():
    # group A: hazard 2.0 until t = 0.5, then none; group B: constant hazard 0.4. Their curves cross
    # at t = 2.5,
    # so A is riskier early and B late: one summary score per patient cannot rank both ends right.
    rng = np.random.default_rng(0)
    n = 600
    group_a = rng.uniform(size=n) < 0.5
    t_a = rng.exponential(0.5, n)
    t_a = np.where(t_a < 0.5, t_a, np.inf)  # no event after t = 0.5
    t_event = np.where(group_a, t_a, rng.exponential(1 / 0.4, n))
    censor = rng.uniform(0.5, 8.0, n)
    time, event = np.minimum(t_event, censor), t_event <= censor
    train, test = (time[: n // 2], event[: n // 2]), (time[n // 2 :], event[n // 2 :])

    def surv_fn(times):  # the true survival of each test patient
        a = np.exp(-2.0 * np.minimum(times, 0.5))[None, :]
        b = np.exp(-0.4 * times)[None, :]
        return np.where(group_a[n // 2 :, None], a, b)

    times = evaluation_times(*train, *test)
    summary = -surv_fn(times).sum(1)  # a restricted-mean proxy: the same for every time
    auc_2d, mean_2d = time_dependent_auc(train, test, 1.0 - surv_fn(times), times)
    ref = cumulative_dynamic_auc(_y(*train), _y(*test), 1.0 - surv_fn(times), times)
    np.testing.assert_allclose(auc_2d, ref[0])
    assert mean_2d == pytest.approx(ref[1])
    auc_1d, mean_1d = time_dependent_auc(train, test, summary, times)
    assert (auc_2d >= auc_1d - 1e-12).all() and mean_2d > mean_1d + 0.02
    rep = survival_report(*train, *test, summary, surv_fn, n_boot=5, curve_auc=True)
    assert rep["mean_td_auc"] == pytest.approx(mean_2d)
    assert survival_report(*train, *test, summary, surv_fn, n_boot=5)["mean_td_auc"] == pytest.approx(mean_1d)
    with pytest.raises(ValueError, match="columns"):
        time_dependent_auc(train, test, 1.0 - surv_fn(times)[:, :-1], times)
    with pytest.raises(ValueError, match="curve_auc needs surv_fn"):
        survival_report(*train, *test, summary, n_boot=5, curve_auc=True)


def test_survival_report_d_calibration_reads_each_patients_own_time():
    X, y = load_gbsg2()
    X = X[["age", "estrec", "pnodes", "progrec", "tsize"]].to_numpy(float)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, te = idx[:450], idx[450:]
    t, e = y["time"].astype(float), y["cens"].astype(bool)
    model = CoxPHSurvivalAnalysis().fit(X[tr], Surv.from_arrays(e[tr], t[tr]))
    fns = model.predict_survival_function(X[te])
    rep = survival_report(t[tr], e[tr], t[te], e[te], model.predict(X[te]),
                          lambda times: np.stack([f(times) for f in fns]), n_boot=5)
    own = np.array([fns[i](t[te][i]) for i in range(len(te))])
    assert rep["d_calibration_p"] == d_calibration(own, e[te])["p_value"]
