"""ABMILEncoder: gated attention by hand, chunking changes nothing, permutation invariance, sampling."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.abmil import ABMILEncoder

D, F = 8, 6


def _encoder(**kwargs) -> ABMILEncoder:
    torch.manual_seed(0)
    return ABMILEncoder(D, {"feature_dim": F}, **{"n_tokens": 3, "attention_dim": 5, **kwargs}).eval()


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """3 patients with 30 patch slots: ragged bags, an absent patient, NaN in the padding."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 30, F, generator=g) * 2
    mask = torch.zeros(3, 30, dtype=torch.bool)
    mask[0, :25] = True
    mask[1, [2, 7, 11, 19, 29]] = True
    mask[2, :10] = True
    present = torch.tensor([True, True, False])
    features = torch.where(mask[..., None] & present[:, None, None], features, float("nan"))
    return {"features": features, "mask": mask, "present": present}


def test_matches_gated_attention_written_out():
    enc = _encoder()
    x = _batch()
    out, attn = enc(x, return_attention=True)
    for i in (0, 1):
        h = enc.patch_proj(x["features"][i][x["mask"][i]])  # (n, D): the valid patches only
        v = torch.tanh(h @ enc.attn_v.weight.T + enc.attn_v.bias)
        a = v * torch.sigmoid(h @ enc.attn_u.weight.T + enc.attn_u.bias)  # gated attention hidden (n, 5)
        weights = torch.softmax(a @ enc.attn_w.weight.T + enc.attn_w.bias, dim=0).T  # (K, n)
        torch.testing.assert_close(attn[i][:, x["mask"][i]], weights, rtol=1e-5, atol=1e-6)
        assert (attn[i][:, ~x["mask"][i]] == 0).all()
        expected = torch.nn.functional.layer_norm(weights @ h + enc.branch_embed, (D,), enc.norm.weight, enc.norm.bias)
        torch.testing.assert_close(out.tokens[i], expected, rtol=1e-5, atol=1e-5)
    assert out.tokens.shape == (3, 3, D) and out.mask[:2].all()
    assert not out.mask[2].any() and (out.tokens[2] == 0).all() and (attn[2] == 0).all()
    torch.testing.assert_close(attn[:2].sum(-1), torch.ones(2, 3))


def test_identical_patches_pool_to_the_projected_patch():
    enc = _encoder()
    patch = torch.randn(F, generator=torch.Generator().manual_seed(4))
    n = 13
    x = {"features": patch.expand(1, n, F).clone(), "mask": torch.ones(1, n, dtype=torch.bool),
         "present": torch.ones(1, dtype=torch.bool)}
    out, attn = enc(x, return_attention=True)
    h = enc.patch_proj[0](patch)  # the projected patch: Linear ...
    h = torch.nn.functional.gelu(h)  # ... then GELU (dropout is off in eval)
    ln = torch.nn.functional.layer_norm(h + enc.branch_embed, (D,), enc.norm.weight, enc.norm.bias)  # (K, D)
    torch.testing.assert_close(out.tokens[0], ln, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn[0], torch.full((3, n), 1 / n))


def test_chunked_equals_unchunked_values_and_gradients():
    x = _batch(1)
    small, whole = _encoder(chunk_size=4), _encoder(chunk_size=10**6)
    a, b = small(x), whole(x)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)
    assert torch.equal(a.mask, b.mask)
    w = torch.randn(a.tokens.shape, generator=torch.Generator().manual_seed(0))
    (a.tokens * w).sum().backward()
    (b.tokens * w).sum().backward()
    for (name, p), q in zip(small.named_parameters(), whole.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_bag_order_does_not_matter():
    enc = _encoder(chunk_size=7)
    x = _batch(2)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(1))
    y = dict(x, features=x["features"][:, perm], mask=x["mask"][:, perm])
    (a, attn_a), (b, attn_b) = enc(x, return_attention=True), enc(y, return_attention=True)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn_a[..., perm], attn_b, rtol=1e-5, atol=1e-6)


def test_sample_patches_uses_only_valid_patches_in_training():
    enc = _encoder(sample_patches=4)
    x = _batch(3)
    n_valid = x["mask"].sum(1)  # 25, 5, 10 (the last patient is absent)
    torch.manual_seed(0)
    enc.train()
    for _ in range(5):
        out, attn = enc(x, return_attention=True)
        used = (attn != 0).any(1)  # (B, P): patches that received any weight
        assert not (used & ~x["mask"]).any(), "a padding patch was sampled"
        assert used[0].sum() == 4 and used[1].sum() == 4 and not used[2].any()
        assert torch.isfinite(out.tokens).all() and out.mask[:2].all() and not out.mask[2].any()
    enc.eval()  # eval: every valid patch counts
    _, attn = enc(x, return_attention=True)
    assert torch.equal((attn != 0).any(1).sum(1), torch.where(x["present"], n_valid, 0))


def test_present_patient_with_empty_bag_gets_masked_zero_tokens():
    enc = _encoder()
    x = _batch()
    x["mask"][1] = False
    out = enc(x)
    assert not out.mask[1].any() and (out.tokens[1] == 0).all() and not out.present[1]
    assert out.present[0] and torch.isfinite(out.tokens).all()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spec"):
        ABMILEncoder(D, {})
    with pytest.raises(ValueError, match="sample_patches"):
        ABMILEncoder(D, {"feature_dim": F}, sample_patches=0)
    with pytest.raises(ValueError, match="n_tokens"):
        ABMILEncoder(D, {"feature_dim": F}, n_tokens=0)
    with pytest.raises(ValueError, match="features"):
        _encoder()(dict(_batch(), features=torch.zeros(3, 30, F + 1)))
