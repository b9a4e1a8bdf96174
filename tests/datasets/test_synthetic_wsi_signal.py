"""The synthetic cohort's ``wsi_signal``: where a slide carries the patient's state."""

import numpy as np

from clinfuse.datasets.synthetic.wsi import FOCAL_FRACTION, FOCAL_TUMOR_SCALE, GRADE_FRACTION, STAIN_SD, slide_bag, tumor_layout, write_wsi
from clinfuse.datasets.wsi import read_slide_features


def _layout(signal: str, n: int = 4000, d: int = 4, f: int = 32):
    rng = np.random.default_rng(0)
    u = rng.standard_normal((n, d))
    t0 = rng.standard_normal(f)
    t0 /= np.linalg.norm(t0)
    mixing = rng.standard_normal((f, d - 1 if signal == "amount" else d)) / np.sqrt(f)
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



def test_focal_share_is_small_and_random_and_the_tumour_features_carry_the_whole_view():
    u, t0, mixing, fraction, shift = _layout("focal")
    assert FOCAL_FRACTION[0] <= fraction.min() and fraction.max() <= FOCAL_FRACTION[1]
    assert all(abs(np.corrcoef(fraction, u[:, j])[0, 1]) < 0.06 for j in range(u.shape[1]))
    np.testing.assert_allclose(shift, FOCAL_TUMOR_SCALE * t0 + u @ mixing.T)


def test_slide_bag_adds_the_stain_to_every_patch_and_keeps_a_minimum_of_tumour_patches():
    shift = np.full(8, 4.0)
    stain = np.linspace(-1.0, 1.0, 8)
    plain, coords = slide_bag(200, 0.001, shift, np.random.default_rng(3))
    stained, coords_s = slide_bag(200, 0.001, shift, np.random.default_rng(3), stain=stain, min_tumor=1)
    assert (plain.mean(1) > 3.0).sum() == 0  # 0.2 of a patch rounds to no tumour patch
    tumour = np.flatnonzero((stained - stain).mean(1) > 3.0)  # shifted by 4 per feature
    assert len(tumour) == 1
    np.testing.assert_array_equal(coords, coords_s)
    others = np.setdiff1d(np.arange(200), tumour)
    np.testing.assert_allclose(stained[others], plain[others] + stain.astype(np.float32), rtol=0, atol=1e-6)
    np.testing.assert_allclose(stained[tumour], plain[tumour] + (shift + stain).astype(np.float32), rtol=0, atol=1e-5)


def test_write_wsi_focal_bag_means_are_mostly_the_stain(tmp_path):
    """Between slides, the mean of all patches varies by about STAIN_SD per feature under "focal"
    (the stain), and far less under "grade" (a 2-20 % share of the tumour shift, plus noise)."""
    n, d, f = 120, 4, 16
    u = np.random.default_rng(0).standard_normal((n, d))
    spread = {}
    for signal in ("grade", "focal"):
        table = write_wsi(tmp_path / signal, u, [f"p{i}" for i in range(n)], np.ones(n, bool),
                          np.random.default_rng(1), np.random.SeedSequence(2), f, (400, 400), False, signal)
        means = np.stack([read_slide_features(tmp_path / signal / path).mean(0) for path in table["path"]])
        spread[signal] = float(np.median(means.std(0)))
    assert abs(spread["focal"] - STAIN_SD) < 0.1 * STAIN_SD
    assert spread["grade"] < 0.5 * STAIN_SD

