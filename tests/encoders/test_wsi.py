"""WSIMeanEncoder: the eval path equals the per-patient masked mean of the patch MLP."""

from __future__ import annotations

import torch

from clinfuse.encoders.wsi import WSIMeanEncoder


def test_eval_path_equals_the_mean_of_patch_mlp_over_real_patches():
    torch.manual_seed(0)
    enc = WSIMeanEncoder(8, WSIMeanEncoder.example_spec(), hidden=16).eval()
    x = WSIMeanEncoder.example_inputs(batch_size=5)
    out = enc(x)
    for i in range(5):
        real = x["mask"][i] & x["present"][i]
        if not real.any():
            assert not out.mask[i].any() and torch.equal(out.tokens[i], torch.zeros(1, 8))
            continue
        ref = enc.norm(enc.patch_mlp(x["features"][i][real]).mean(0))  # (D,) this patient alone
        torch.testing.assert_close(out.tokens[i, 0], ref, rtol=1e-5, atol=1e-5)


def test_eval_path_equals_the_training_path_without_dropout():
    torch.manual_seed(0)
    enc = WSIMeanEncoder(8, WSIMeanEncoder.example_spec(), hidden=16, dropout=0.0)
    x = WSIMeanEncoder.example_inputs(batch_size=6, seed=3)
    train = enc.train()(x)
    fast = enc.eval()(x)
    torch.testing.assert_close(fast.tokens, train.tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.mask, train.mask)


def test_eval_path_over_several_blocks_of_patches_equals_the_per_patient_mean():
    """Bags whose real patches span several eval blocks (a block boundary inside a patient)."""
    from clinfuse.encoders import wsi

    torch.manual_seed(0)
    enc = WSIMeanEncoder(8, {"feature_dim": 4}, hidden=16).eval()
    counts = [3000, 0, 2500, 1]
    p = max(counts)
    mask = torch.arange(p)[None, :] < torch.tensor(counts)[:, None]  # (4, P)
    x = {"features": torch.randn(4, p, 4), "mask": mask, "present": torch.tensor([True, True, True, True])}
    assert sum(counts) > wsi._EVAL_BLOCK
    out = enc(x)
    for i, c in enumerate(counts):
        if c == 0:
            assert not out.mask[i].any()
            continue
        ref = enc.norm(enc.patch_mlp(x["features"][i, :c]).mean(0))
        torch.testing.assert_close(out.tokens[i, 0], ref, rtol=1e-5, atol=1e-5)
