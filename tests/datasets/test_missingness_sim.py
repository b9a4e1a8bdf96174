"""Test-time missingness simulation on batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.datasets.missingness import draw_drops, remove_modalities


def test_draw_drops_hits_the_rate_and_mnar_follows_the_driver():
    rng = np.random.default_rng(0)
    risk = rng.normal(size=20000)
    mcar = draw_drops("mcar", 0.3, 20000, rng)
    mnar = draw_drops("mnar", 0.3, 20000, rng, mnar_driver=risk)
    assert abs(mcar.mean() - 0.3) < 0.015 and abs(mnar.mean() - 0.3) < 0.015
    assert abs(np.corrcoef(mcar, risk)[0, 1]) < 0.03
    assert risk[mnar].mean() > risk[~mnar].mean() + 0.5  # high-risk patients lose data more often


def test_draw_drops_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="mnar_driver"):
        draw_drops("mnar", 0.3, 10, rng)
    with pytest.raises(ValueError, match=r"\(10,\)"):
        draw_drops("mar", 0.3, 10, rng, mar_driver=np.zeros(3))
    with pytest.raises(ValueError, match="rate"):
        draw_drops("mcar", 1.0, 10, rng)
    with pytest.raises(ValueError, match="mechanism"):
        draw_drops("sometimes", 0.1, 10, rng)


def test_remove_modalities_marks_absent_and_leaves_the_rest():
    inputs = {
        "ecg": {"signal": torch.ones(3, 2, 4), "present": torch.tensor([True, True, False])},
        "tabular": {"numeric": torch.ones(3, 2), "present": torch.tensor([True, True, True])},
    }
    out = remove_modalities(inputs, {"ecg": torch.tensor([True, False, False])})
    assert out["ecg"]["present"].tolist() == [False, True, False]
    assert out["tabular"]["present"].tolist() == [True, True, True]
    assert torch.equal(out["ecg"]["signal"], inputs["ecg"]["signal"])  # data untouched, only the mask
    assert inputs["ecg"]["present"].tolist() == [True, True, False]  # the input batch is not modified
    with pytest.raises(ValueError, match="notes"):
        remove_modalities(inputs, {"notes": torch.tensor([True, False, False])})
    with pytest.raises(ValueError, match=r"\(2,\)"):
        remove_modalities(inputs, {"ecg": torch.tensor([True, False])})
