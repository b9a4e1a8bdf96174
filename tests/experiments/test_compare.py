"""Paired bootstrap comparison of C-indices, subgroups, and `clinfuse compare`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clinfuse.experiments.compare import paired_auroc, paired_bootstrap, paired_c_index
from clinfuse.experiments.subgroups import by_subgroup, subgroups
from clinfuse.experiments.metrics import harrell_c_index
from clinfuse.experiments.survival_metrics import bootstrap_ci


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-x))
    c = rng.exponential(2.0, size=n)
    return x, np.minimum(t, c), (t <= c).astype(float)


def test_same_model_twice_differs_by_nothing_and_negated_loses_clearly():
    x, time, event = _data()
    noisy = x + np.random.default_rng(1).normal(scale=2.0, size=len(x))
    table = paired_c_index([x, x, -x, noisy], time, event, n_boot=300)
    assert table.loc[0, "c_index"] == pytest.approx(harrell_c_index(x, time, event))
    assert table.loc[1, ["delta", "delta_low", "delta_high"]].tolist() == [0.0, 0.0, 0.0]
    assert table.loc[1, "p_value"] == 1.0
    assert table.loc[2, "c_index"] == pytest.approx(1 - table.loc[0, "c_index"], abs=1e-9)  # no tied risks
    assert table.loc[2, "delta_high"] < 0 and table.loc[2, "p_value"] == pytest.approx(1 / 300)
    assert table.loc[3, "delta"] < 0 and table.loc[3, "delta_low"] < table.loc[3, "delta"] < table.loc[3, "delta_high"]


def test_model_interval_equals_the_unpaired_bootstrap_on_the_same_resamples():
    x, time, event = _data(seed=2)
    table = paired_c_index([x], time, event, n_boot=200, seed=7)
    want = bootstrap_ci(lambda t, e, r: harrell_c_index(r, t, e), time, event, x, n_boot=200, seed=7)
    assert (table.loc[0, "low"], table.loc[0, "high"]) == pytest.approx((want[1], want[2]))


def test_several_seeds_per_model_average_their_c_on_each_resample():
    """A (k, n) score matrix is k runs of one model: its C is the mean of theirs, on every resample
    (checked by hand on the same resamples), and one row equals the plain 1-D model."""
    x, time, event = _data(seed=3)
    rng = np.random.default_rng(4)
    runs_a = np.stack([x + rng.normal(scale=s, size=len(x)) for s in (1.0, 2.0)])  # (2, n)
    runs_b = np.stack([x + rng.normal(scale=s, size=len(x)) for s in (0.5, 3.0, 1.5)])  # (3, n)
    table = paired_c_index([runs_a, runs_b], time, event, n_boot=50, seed=9)

    def c(r, rows=slice(None)):
        return np.mean([harrell_c_index(row[rows], time[rows], event[rows]) for row in r])

    assert table.loc[0, "c_index"] == pytest.approx(c(runs_a)) and table.loc[1, "c_index"] == pytest.approx(c(runs_b))
    draws = np.random.default_rng(9)
    deltas = []
    for _ in range(50):
        rows = draws.integers(0, len(x), len(x))
        deltas.append(c(runs_b, rows) - c(runs_a, rows))
    assert (table.loc[1, "delta_low"], table.loc[1, "delta_high"]) == pytest.approx(tuple(np.quantile(deltas, [0.025, 0.975])))
    one = paired_c_index([runs_a[:1], runs_b[:1]], time, event, n_boot=50, seed=9)
    flat = paired_c_index([runs_a[0], runs_b[0]], time, event, n_boot=50, seed=9)
    pd.testing.assert_frame_equal(one, flat)


def test_bad_inputs_are_named():
    x, time, event = _data(n=20)
    with pytest.raises(ValueError, match=r"model\(s\) \[1\]"):
        paired_c_index([x, x[:-1]], time, event)
    with pytest.raises(ValueError, match="no event"):
        paired_c_index([x], time, np.zeros_like(event))


def test_subgroups_by_level_quartile_and_missing():
    cat = pd.Series(["F", "M", None, "F"])
    assert subgroups(cat).tolist() == ["F", "M", "missing", "F"]
    num = pd.Series(np.r_[np.arange(20.0), np.nan])
    labels = subgroups(num)
    assert labels.iloc[0] == "Q1 [0, 4]" and labels.iloc[19] == "Q4 [15, 19]" and labels.iloc[20] == "missing"
    x, time, event = _data(n=200, seed=3)
    groups = pd.Series(np.where(np.arange(200) < 100, "a", "b"))
    sub = by_subgroup([x, -x], ["m0", "m1"], {"time": time, "event": event}, groups, n_boot=50)
    assert sub["n"].tolist() == [100, 100]
    assert sub.loc[0, "m0"] == pytest.approx(harrell_c_index(x[:100], time[:100], event[:100]))


def test_clinfuse_compare_prints_both_tables(trained_prognosis, synthetic_cohort, tmp_path, capsys):
    from clinfuse.experiments.cli import main

    prog, _ = trained_prognosis
    folder = prog.save(tmp_path / "a")
    import sys

    argv = ["clinfuse", "compare", "--models", str(folder), str(folder), "--root", str(synthetic_cohort),
            "--split", "test", "--by", "sex", "--n-boot", "50"]
    old, sys.argv = sys.argv, argv
    try:
        main()
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    assert "| model 1: " in out and "+0.0000 [+0.0000, +0.0000] | 1 |" in out
    assert "Harrell C by sex" in out and "| F |" in out and "| M |" in out


def test_paired_auroc_equals_sklearn_and_flags_the_worse_model():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400).astype(float)
    good, weak = y + rng.normal(scale=0.8, size=400), y + rng.normal(scale=3.0, size=400)
    table = paired_auroc([good, weak], y, n_boot=300)
    assert table.loc[0, "auroc"] == pytest.approx(roc_auc_score(y, good))
    assert table.loc[1, "delta"] == pytest.approx(roc_auc_score(y, weak) - roc_auc_score(y, good))
    assert table.loc[1, "delta_high"] < 0 and table.loc[1, "p_value"] < 0.01
    with pytest.raises(ValueError, match="only one class"):
        paired_auroc([good], np.ones(400))
    sub = by_subgroup([good, weak], ["g", "w"], {"binary": y}, pd.Series(np.where(np.arange(400) < 200, "a", "b")), n_boot=30)
    assert sub.columns.tolist()[:3] == ["group", "n", "positives"]
    assert sub.loc[1, "g"] == pytest.approx(roc_auc_score(y[200:], good[200:]))


def test_clinfuse_compare_binary_models_by_auroc(synthetic_cohort, tmp_path, capsys, train_predictor):
    import sys

    from sklearn.metrics import roc_auc_score

    from clinfuse.experiments.cli import main

    _, prog = train_predictor(synthetic_cohort, tmp_path, ["tabular", "genomics"], d_model=16, task="binary")
    folder = prog.save(tmp_path / "binary")
    old, sys.argv = sys.argv, ["clinfuse", "compare", "--models", str(folder), str(folder), "--root",
                               str(synthetic_cohort), "--split", "test", "--n-boot", "40"]
    try:
        main()
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    frame = prog.predict_cohort(synthetic_cohort, split="test", show_progress=False)
    auroc = roc_auc_score(frame["binary"], frame["probability"])
    assert "| AUROC [95% CI] |" in out and f"| model 0: {folder} (transformer; tabular, genomics) | {auroc:.4f} [" in out
    assert "positives (split test)" in out


def test_subgroups_smaller_than_the_minimum_get_no_metric():
    x, time, event = _data(n=60, seed=5)
    groups = pd.Series(np.where(np.arange(60) < 4, "tiny", np.where(np.arange(60) < 14, "ten", "rest")))
    sub = by_subgroup([x], ["m"], {"time": time, "event": event}, groups, n_boot=20).set_index("group")
    assert sub.loc["tiny", "n"] == 4 and np.isnan(sub.loc["tiny", "m"]) and sub.loc["tiny", "m 95% CI"] is None
    assert sub.loc["ten", "m"] == pytest.approx(harrell_c_index(x[4:14], time[4:14], event[4:14]))
    small = by_subgroup([x], ["m"], {"time": time, "event": event}, groups, n_boot=20, min_size=2).set_index("group")
    assert small.loc["tiny", "m"] == pytest.approx(harrell_c_index(x[:4], time[:4], event[:4]))


def test_paired_bootstrap_p_value_is_two_sided_by_hand():
    rng = np.random.default_rng(3)
    s0, s1, y = rng.normal(size=50), rng.normal(0.15, 1, size=50), np.zeros(50)

    def metric(r, y):
        return float(r.mean())

    table = paired_bootstrap(metric, [s0, s1], [y], n_boot=400, seed=7)
    g = np.random.default_rng(7)
    d = np.array([(lambda rows: s1[rows].mean() - s0[rows].mean())(g.integers(0, 50, 50)) for _ in range(400)])
    side = min((d <= 0).mean(), (d >= 0).mean())
    assert table.loc[1, "p_value"] == min(1.0, max(2 * side, 1 / 400))


def test_bootstrap_table_reports_the_sd_of_the_resampled_differences():
    x, time, event = _data(seed=5)
    other = x + np.random.default_rng(6).normal(size=len(x))
    table = paired_c_index([x, other], time, event, n_boot=40, seed=2)
    draws = np.random.default_rng(2)
    deltas = []
    for _ in range(40):
        rows = draws.integers(0, len(x), len(x))
        deltas.append(harrell_c_index(other[rows], time[rows], event[rows]) - harrell_c_index(x[rows], time[rows], event[rows]))
    assert table.loc[1, "delta_se"] == pytest.approx(np.std(deltas, ddof=1))
    assert np.isnan(table.loc[0, "delta_se"])


def test_seed_and_patient_interval_by_hand():
    from scipy import stats

    from clinfuse.experiments.compare import seed_and_patient_interval

    # three seeds, one of them far ahead: the seed part dominates and the interval widens past 0
    d = [0.0079, 0.0652, 0.0081]
    out = seed_and_patient_interval(0.0126, d)
    var_seed = np.var(d, ddof=1) / 3
    se = np.sqrt(0.0126**2 + var_seed)
    df = se**4 * 2 / var_seed**2
    half = stats.t.ppf(0.975, df) * se
    assert out["delta"] == pytest.approx(np.mean(d)) and out["se"] == pytest.approx(se) and out["df"] == pytest.approx(df)
    assert (out["low"], out["high"]) == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    assert out["low"] < 0 < out["high"] and out["p_value"] == pytest.approx(2 * stats.t.sf(np.mean(d) / se, df))
    # patient part alone would have been clear of 0: mean - 1.96 * 0.0126 > 0
    assert np.mean(d) - 1.96 * 0.0126 > 0
    # identical seeds: no seed variance, the normal interval of the patient part
    same = seed_and_patient_interval(0.01, [0.03] * 4)
    assert same["df"] == np.inf and (same["low"], same["high"]) == pytest.approx((0.03 - 1.959964 * 0.01, 0.03 + 1.959964 * 0.01), abs=1e-6)
    # one seed: the seed part is unknown, no interval
    assert np.isnan(seed_and_patient_interval(0.01, [0.03])["low"])
    with pytest.raises(ValueError, match="seed_deltas"):
        seed_and_patient_interval(0.01, [0.03, float("nan")])
    with pytest.raises(ValueError, match="patient_se"):
        seed_and_patient_interval(-0.01, [0.03, 0.02])


def test_corrected_resampled_t_by_hand():
    from scipy import stats

    from clinfuse.experiments.compare import corrected_resampled_t

    # five folds of 5,000 train / 1,250 test: mean 0.003, sample variance
    # (0 + 4 + 1 + 4 + 1) e-6 / 4 = 2.5e-6, corrected by (1/5 + 1250/5000) = 0.45
    out = corrected_resampled_t([0.003, 0.005, 0.004, 0.001, 0.002], n_train=5000, n_test=1250)
    se = np.sqrt(0.45 * 2.5e-6)
    assert out["delta"] == pytest.approx(0.003) and out["se"] == pytest.approx(se) and out["df"] == 4
    half = stats.t.ppf(0.975, 4) * se
    assert (out["low"], out["high"]) == pytest.approx((0.003 - half, 0.003 + half))
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(0.003 / se, 4))
    # the uncorrected se (var / 5 only) would be sqrt(5e-7) = 0.000707: the correction widens it 1.5x
    assert out["se"] == pytest.approx(1.5 * np.sqrt(2.5e-6 / 5))
    # equal folds: no variance; one fold: no interval
    assert corrected_resampled_t([0.01] * 3, 100, 50)["p_value"] == 0.0
    assert np.isnan(corrected_resampled_t([0.01], 100, 50)["low"])
    with pytest.raises(ValueError, match="deltas"):
        corrected_resampled_t([0.01, float("inf")], 100, 50)
    with pytest.raises(ValueError, match="n_train"):
        corrected_resampled_t([0.01, 0.02], 0, 50)
