"""Input checks of the metric wrappers: bad input is a ValueError naming the argument, never a number.

Valid inputs are checked against independent implementations (lifelines, scikit-learn).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lifelines.utils import concordance_index
from sklearn.metrics import average_precision_score, roc_auc_score
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc
from sksurv.util import Surv

from clinfuse.experiments.metrics import classification_metrics, harrell_c_index
from clinfuse.experiments.survival_metrics import bootstrap_ci, time_dependent_auc, uno_c_index


def _cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(1 / np.exp(x))
    t_cens = rng.exponential(1.5, size=n)
    return x, np.minimum(t_event, t_cens) + 1e-3, (t_event <= t_cens).astype(int)


# --- 1. harrell_c_index ---------------------------------------------------------------------------


def test_harrell_equals_lifelines_for_float_int_and_bool_events():
    x, time, event = _cohort()
    want = concordance_index(time, -x, event)  # lifelines: an independent implementation
    assert harrell_c_index(x, time, event) == pytest.approx(want, rel=1e-12)
    assert harrell_c_index(x, time, event.astype(float)) == pytest.approx(want, rel=1e-12)
    assert harrell_c_index(x, time, event.astype(bool)) == pytest.approx(want, rel=1e-12)
    assert harrell_c_index(list(x), list(time), list(event)) == pytest.approx(want, rel=1e-12)


def test_harrell_stays_nan_where_undefined():
    r, t = np.array([0.1, 0.5, 0.2]), np.array([1.0, 2.0, 3.0])
    assert np.isnan(harrell_c_index(r, t, np.zeros(3)))  # no event
    assert np.isnan(harrell_c_index(r, np.full(3, 2.0), np.ones(3)))  # one distinct time
    assert np.isnan(harrell_c_index(r, t, np.array([0, 0, 1])))  # the only event is at the largest time


@pytest.mark.parametrize(
    "change, match",
    [
        ({"event": [1, 2, 0, 1, 0, 1]}, r"event must be 0/1; first bad index 1 \(value 2\)"),
        ({"event": [1, 0, 0.5, 1, 0, 1]}, r"event must be 0/1; first bad index 2 \(value 0.5\)"),
        ({"event": [1, 0, 0, -1, 0, 1]}, r"event must be 0/1; first bad index 3 \(value -1\)"),
        ({"event": [1, 0, 0, 1, np.nan, 1]}, r"event must be 0/1; first bad index 4"),
        ({"time": [1.0, 2.0, -3.0, 4.0, 5.0, 6.0]}, r"time must be finite and > 0; first bad index 2"),
        ({"time": [1.0, 0.0, 3.0, 4.0, 5.0, 6.0]}, r"time must be finite and > 0; first bad index 1"),
        ({"time": [1.0, 2.0, 3.0, np.inf, 5.0, 6.0]}, r"time must be finite and > 0; first bad index 3"),
        ({"risk": [0.1, 0.2, np.nan, 0.4, 0.5, 0.6]}, r"risk must be finite; first bad index 2"),
        ({"risk": [0.1, 0.2, 0.3, 0.4, 0.5]}, r"risk must have 1 dim\(s\) with 6 rows, got shape \(5,\)"),
        ({"event": [1, 0, 0, 1, 0]}, r"time and event must have equal lengths, got 6 and 5"),
        ({"time": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}, r"time must be 1-D"),
    ],
)
def test_harrell_rejects_bad_input(change, match):
    args = {"risk": [0.6, 0.1, 0.5, 0.2, 0.4, 0.3], "time": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "event": [1, 0, 1, 1, 0, 1]}
    args.update(change)
    with pytest.raises(ValueError, match=match):
        harrell_c_index(np.array(args["risk"]), np.array(args["time"]), np.array(args["event"]))


def test_harrell_does_not_flatten_a_2d_risk():
    _, time, event = _cohort(n=60)
    risk = np.random.default_rng(1).normal(size=(30, 2))  # 60 numbers, but not one per patient
    with pytest.raises(ValueError, match=r"risk must have 1 dim\(s\) with 60 rows, got shape \(30, 2\)"):
        harrell_c_index(risk, time, event)


# --- 3. uno_c_index tau, time_dependent_auc times, bootstrap_ci n_boot ----------------------------


def test_uno_tau_must_be_inside_test_follow_up():
    x, time, event = _cohort(n=80, seed=2)
    train, test = (time[:40], event[:40]), (time[40:], event[40:])
    tau = float(np.quantile(time[40:], 0.7))
    want = concordance_index_ipcw(Surv.from_arrays(event[:40], time[:40]), Surv.from_arrays(event[40:], time[40:]),
                                  x[40:], tau=tau)[0]
    assert uno_c_index(train, test, x[40:], tau=tau) == want
    for bad in (0.0, -1.0, np.nan, np.inf, float(time[40:].min())):
        with pytest.raises(ValueError, match="tau must be None or a finite number above the smallest test time"):
            uno_c_index(train, test, x[40:], tau=bad)


def test_time_dependent_auc_times_must_be_non_empty_and_finite():
    x, time, event = _cohort(n=80, seed=3)
    train, test = (time[:40], event[:40]), (time[40:], event[40:])
    with pytest.raises(ValueError, match=r"times must be a non-empty 1-D array, got shape \(0,\)"):
        time_dependent_auc(train, test, x[40:], [])
    with pytest.raises(ValueError, match=r"times must be finite; first bad index 1"):
        time_dependent_auc(train, test, x[40:], [0.3, np.nan])
    times = np.quantile(time[40:][event[40:] == 1], [0.3, 0.6])  # valid: equal to sksurv called directly
    auc, mean = time_dependent_auc(train, test, x[40:], times)
    ref = cumulative_dynamic_auc(Surv.from_arrays(event[:40], time[:40]), Surv.from_arrays(event[40:], time[40:]),
                                 x[40:], times)
    np.testing.assert_array_equal(auc, ref[0])
    assert mean == ref[1]


@pytest.mark.parametrize("n_boot", [0, -5, 2.5, True, None])
def test_bootstrap_needs_at_least_one_resample(n_boot):
    x, time, event = _cohort()
    with pytest.raises(ValueError, match="n_boot must be an integer >= 1"):
        bootstrap_ci(lambda t, e, r: harrell_c_index(r, t, e), time, event, x, n_boot=n_boot)


# --- 4. classification_metrics --------------------------------------------------------------------


def test_binary_metrics_accept_numpy_and_equal_sklearn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 200)
    logits = y * 1.2 + rng.normal(size=200)
    from_numpy = classification_metrics(logits, y, "binary")
    from_torch = classification_metrics(torch.as_tensor(logits), torch.as_tensor(y), "binary")
    assert from_numpy == from_torch
    assert from_numpy["auroc"] == pytest.approx(roc_auc_score(y, logits), abs=1e-6)
    assert from_numpy["auprc"] == pytest.approx(average_precision_score(y, logits), abs=1e-6)
    one_class = classification_metrics(logits, np.zeros(200), "binary")
    assert np.isnan(one_class["auroc"]) and np.isnan(one_class["auprc"])


def test_multiclass_metrics_accept_numpy_and_equal_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    logits = np.eye(3)[y] + rng.normal(size=(300, 3))
    got = classification_metrics(logits, y, "multiclass", n_classes=3)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-6)


@pytest.mark.parametrize(
    "scores, target, task, match",
    [
        ([0.1, np.nan, 0.3, 0.2], [0, 1, 0, 1], "binary", r"scores must be finite; first bad index 1"),
        ([0.1, 0.4, np.inf, 0.2], [0, 1, 0, 1], "binary", r"scores must be finite; first bad index 2"),
        ([0.1, 0.4, 0.3, 0.2], [0, 1, 0, 1], "binay", r"task must be one of \('binary', 'multiclass'\), got 'binay'"),
        ([0.1, 0.4, 0.3], [0, 1, 0, 1], "binary", r"scores must have shape \(4,\)"),
        ([0.1, 0.4, 0.3, 0.2], [0, 1, 2, 1], "binary", r"target must hold labels in \{0..1\}.*first bad index 2"),
        ([[0.1, 0.2, 0.3], [0.3, np.nan, 0.1]], [0, 1], "multiclass", r"scores must be finite; first bad index 1"),
        ([[0.1, 0.2], [0.3, 0.4]], [0, 1], "multiclass", r"scores must have shape \(2, 3\)"),
        ([[0.1, 0.2, 0.3]] * 2, [0, 3], "multiclass", r"target must hold labels in \{0..2\}.*first bad index 1"),
    ],
)
def test_classification_metrics_reject_bad_input(scores, target, task, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(torch.tensor(scores), torch.tensor(target), task, n_classes=3)
