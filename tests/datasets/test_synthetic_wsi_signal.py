"""The synthetic cohort's ``wsi_signal``: where a slide carries the patient's state."""

import numpy as np

from clinfuse.datasets.synthetic.wsi import GRADE_FRACTION, tumor_layout


def _layout(signal: str, n: int = 4000, d: int = 4, f: int = 32):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((n, d))
    t0 = rng.standard_normal(f)
    t0 /= np.linalg.norm(t0)
    mixing = rng.standard_normal((f, d if signal == "grade" else d - 1)) / np.sqrt(f)
    fraction, shift = tumor_layout(u, t0, mixing, signal, np.random.default_rng(1))
    return u, t0, mixing, fraction, shift


def test_grade_share_is_random_and_the_tumour_features_carry_the_whole_view():
    u, t0, mixing, fraction, shift = _layout("grade")
    assert GRADE_FRACTION[0] <= fraction.min() and fraction.max() <= GRADE_FRACTION[1]
    assert all(abs(np.corrcoef(fraction, u[:, j])[0, 1]) < 0.06 for j in range(u.shape[1]))
    np.testing.assert_allclose(shift, 1.5 * t0 + u @ mixing.T)


def test_amount_share_follows_the_first_view_component_and_features_the_rest():
    u, t0, mixing, fraction, shift = _layout("amount")
    assert np.corrcoef(fraction, u[:, 0])[0, 1] > 0.8
    np.testing.assert_allclose(shift, 1.5 * t0 + u[:, 1:] @ mixing.T)

