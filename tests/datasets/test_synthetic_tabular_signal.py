"""The synthetic cohort's ``tabular_signal``: every lab follows the view, or pairs of labs carry it
only jointly."""

import numpy as np
import pytest

from clinfuse.datasets.synthetic.tabular import INTERACTION_PAIRS, NUMERIC, draw_tabular

N = 4000


def _z(table, name):
    """A column back on its standardised scale (log for the log-normal labs); clipping is rare."""
    centre, spread, _, _, log_scale = NUMERIC[name]
    x = table[name].to_numpy(float)
    return np.log(x / centre) / spread if log_scale else (x - centre) / spread


def _clipped(table, name):
    _, _, low, high, _ = NUMERIC[name]
    x = table[name].to_numpy(float)
    return (x <= low) | (x >= high)


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_interaction_pairs_carry_the_view_only_jointly():
    u = np.random.default_rng(0).standard_normal((N, 6))
    linear = draw_tabular(u, np.random.default_rng(5), "linear")
    joint = draw_tabular(u, np.random.default_rng(5), "interaction")
    paired = {c for pair in INTERACTION_PAIRS for c in pair}
    for name in set(linear.columns) - paired:  # age, albumin and the categorical columns: the same draws
        assert linear[name].equals(joint[name]), name
    for first, second in INTERACTION_PAIRS:
        lin_a, lin_b = _z(linear, first), _z(linear, second)
        a, b = _z(joint, first), _z(joint, second)
        inside = ~(_clipped(linear, first) | _clipped(linear, second) | _clipped(joint, first) | _clipped(joint, second))
        inside &= a != 0  # a first value rounded onto its centre (2 decimals) keeps no sign
        assert inside.mean() > 0.97  # the clinical ranges clip a few tails, asymmetrically
        np.testing.assert_allclose(np.abs(a)[inside], np.abs(lin_a)[inside], atol=0.05)  # magnitudes kept, signs flipped
        np.testing.assert_allclose((np.sign(a) * b)[inside], lin_b[inside], atol=0.05)  # sign(first) x second gives s_b back
        k = list(NUMERIC).index(second) % 6  # the view component the second column follows
        assert _corr(lin_b, u[:, k]) > 0.6  # linear: the lab alone reads it
        assert abs(_corr(b, u[:, k])) < 0.05 and abs(_corr(a, u[:, k])) < 0.05  # interaction: neither alone
        assert _corr(np.sign(a) * b, u[:, k]) > 0.6  # jointly: as much as before
        assert abs(np.mean(a > 0) - 0.5) < 0.03  # the flips are fair coins
        assert a.std() == pytest.approx(lin_a.std(), rel=0.05) and b.std() == pytest.approx(lin_b.std(), rel=0.05)


def test_unknown_tabular_signal_is_named():
    with pytest.raises(ValueError, match="tabular signal.*'xor'"):
        draw_tabular(np.zeros((3, 6)), np.random.default_rng(0), "xor")
