"""Training-time patch subsampling: valid patches only, without replacement, uniform."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.patch_sampling import sample_valid_patches, unsample


def _bags():
    """4 bags of 10 patches; feature 0 holds the patch position (to check what was picked)."""
    valid = torch.zeros(4, 10, dtype=torch.bool)
    valid[0, [1, 3, 4, 6, 8, 9]] = True  # 6 valid > n
    valid[1, [2, 5]] = True  # 2 valid < n
    valid[2] = True  # all valid
    features = torch.arange(10.0)[None, :, None].expand(4, 10, 3).clone()
    features[~valid] = float("nan")  # padding garbage
    return features, valid


def test_only_valid_patches_without_replacement():
    features, valid = _bags()
    torch.manual_seed(0)
    for _ in range(20):
        kept, kept_valid, index = sample_valid_patches(features, valid, 4)
        assert kept.shape == (4, 4, 3) and kept_valid.shape == (4, 4) and index.shape == (4, 4)
        assert torch.equal(kept_valid, torch.gather(valid, 1, index))
        assert torch.equal(kept[kept_valid][:, 0].long(), index[kept_valid])  # features follow their index
        for row in range(4):
            assert len(set(index[row].tolist())) == 4  # no patch twice
        assert kept_valid[0].all() and kept_valid[2].all()  # enough valid patches: only valid ones
        assert set(index[1][kept_valid[1]].tolist()) == {2, 5}  # too few: every valid one is kept
        assert not kept_valid[3].any()  # no valid patch at all


def test_draw_is_uniform_among_valid_patches():
    features, valid = _bags()
    torch.manual_seed(1)
    counts = torch.zeros(10)
    draws = 3000
    for _ in range(draws):
        counts += torch.bincount(sample_valid_patches(features, valid, 2)[2][0], minlength=10)
    share = counts / draws  # each of the 6 valid patches: 2/6 in expectation
    assert (share[~valid[0]] == 0).all()
    torch.testing.assert_close(share[valid[0]], torch.full((6,), 2 / 6), atol=0.04, rtol=0)


def test_short_bag_is_returned_as_is_and_bad_n_raises():
    features, valid = _bags()
    kept, kept_valid, index = sample_valid_patches(features, valid, 10)
    assert kept is features and kept_valid is valid and torch.equal(index[0], torch.arange(10))
    with pytest.raises(ValueError, match="sample_patches"):
        sample_valid_patches(features, valid, 0)


def test_unsample_puts_values_back():
    index = torch.tensor([[4, 0], [1, 2]])
    values = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # (B=2, 1, S=2)
    full = unsample(values, index, 5)
    assert torch.equal(full, torch.tensor([[[2.0, 0, 0, 0, 1.0]], [[0, 3.0, 4.0, 0, 0]]]))
    assert unsample(values, None, 5) is values
