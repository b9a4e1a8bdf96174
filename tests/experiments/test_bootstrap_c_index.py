"""bootstrap_c_index: Harrell's C of resamples via pair matrices, equal to scikit-survival's."""

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored

from clinfuse.experiments.bootstrap_c_index import bootstrap_c_index, resample_weights
from clinfuse.experiments.compare import paired_bootstrap, paired_c_index
from clinfuse.experiments.metrics import harrell_c_index


def _cohort(n: int = 120, seed: int = 0):
    """Times with many ties (integers 1-15), censored patients tied with events, risks with ties."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 16, n).astype(float)
    event = rng.uniform(size=n) < 0.6
    risks = np.stack([np.round(-time / 5 + rng.normal(0, s, n), 1) for s in (0.5, 1.0, 3.0)])  # (3, n)
    return risks, time, event


def test_each_resample_equals_scikit_survival_on_the_resampled_patients():
    risks, time, event = _cohort()
    rows = np.random.default_rng(1).integers(0, len(time), (25, len(time)))
    got = bootstrap_c_index(risks, time, event, resample_weights(rows, len(time)), block=37)  # (25, 3)
    for b, r in enumerate(rows):
        for k in range(3):
            want = concordance_index_censored(event[r], time[r], risks[k, r])[0]
            assert got[b, k] == pytest.approx(want, abs=1e-12)
    assert (np.abs(np.diff(got, axis=1)) > 1e-3).any()  # the models do differ


def test_weights_of_one_are_the_patients_themselves():
    risks, time, event = _cohort(seed=2)
    got = bootstrap_c_index(risks, time, event, np.ones((1, len(time))))
    assert got[0] == pytest.approx([harrell_c_index(r, time, event) for r in risks], abs=1e-12)


def test_undefined_resamples_are_nan():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 0, 1, 0])
    risk = np.array([[4.0, 3.0, 2.0, 1.0]])
    w = np.array([[0, 2, 0, 2], [3, 0, 0, 0], [1, 1, 1, 1]], dtype=float)  # no event; one time; all
    got = bootstrap_c_index(risk, time, event, w)[:, 0]
    assert np.isnan(got[0]) and np.isnan(got[1]) and got[2] == 1.0


def test_paired_c_index_equals_the_generic_bootstrap_with_harrell():
    risks, time, event = _cohort(n=90, seed=3)
    models = [risks[:2], risks[1:], risks[2]]  # two with (k, n) seed rows, one plain
    fast = paired_c_index(models, time, event, n_boot=150, seed=5)
    slow = paired_bootstrap(harrell_c_index, models, (time, event), n_boot=150, seed=5)
    slow = slow.rename(columns={"estimate": "c_index"})
    np.testing.assert_allclose(fast.to_numpy(float), slow.to_numpy(float), atol=1e-12, equal_nan=True)


def test_shapes_are_checked():
    risks, time, event = _cohort()
    with pytest.raises(ValueError, match="patient axis"):
        bootstrap_c_index(risks[:, :-1], time, event, np.ones((1, len(time))))
