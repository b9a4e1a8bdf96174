"""TransMILEncoder: equals an unchunked torch attention reference, permutation invariance, sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as Fn

from clinfuse.encoders.transmil import TransMILEncoder

D, F, H, K = 8, 6, 2, 3


def _encoder(**kwargs) -> TransMILEncoder:
    torch.manual_seed(0)
    return TransMILEncoder(D, {"feature_dim": F}, **{"n_queries": K, "n_heads": H, **kwargs}).eval()


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


def _reference(enc: TransMILEncoder, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unchunked: torch's scaled_dot_product_attention over each present patient's valid patches,
    then the same residual/feed-forward/latent layers. Returns tokens (2, K, D) and weights (2, H, K, P)."""
    tokens, weights = [], []
    for i in (0, 1):
        valid = x["mask"][i]
        h = enc.to_kv(enc.patch_norm(enc.patch_proj(x["features"][i][valid])))  # (n, 2D)
        k, v = h[:, :D].view(-1, H, D // H).transpose(0, 1), h[:, D:].view(-1, H, D // H).transpose(0, 1)
        q = enc.to_q(enc.query_norm(enc.queries)).view(K, H, D // H).transpose(0, 1)  # (H, K, D/H)
        read = Fn.scaled_dot_product_attention(q, k, v)  # (H, K, D/H)
        w = torch.zeros(H, K, valid.shape[0])
        w[:, :, valid] = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, -1)
        z = enc.queries + enc.out_proj(read.transpose(0, 1).reshape(K, D))
        z = z + enc.ffn(z)
        z = enc.latent(z[None])[0] if enc.latent is not None else z
        tokens.append(enc.norm(z))
        weights.append(w)
    return torch.stack(tokens), torch.stack(weights)


@pytest.mark.parametrize("n_layers", [0, 2])
def test_chunked_encoder_equals_unchunked_torch_attention(n_layers):
    enc = _encoder(chunk_size=4, n_layers=n_layers)
    x = _batch()
    out, attn = enc(x, return_attention=True)
    tokens, weights = _reference(enc, x)
    torch.testing.assert_close(out.tokens[:2], tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn[:2], weights, rtol=1e-5, atol=1e-6)
    assert out.tokens.shape == (3, K, D) and out.mask[:2].all()
    assert not out.mask[2].any() and (out.tokens[2] == 0).all() and (attn[2] == 0).all()


def test_chunk_size_changes_neither_values_nor_gradients():
    x = _batch(1)
    small, whole = _encoder(chunk_size=3), _encoder(chunk_size=10**6)
    a, b = small(x), whole(x)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)
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
    torch.manual_seed(0)
    enc.train()
    for _ in range(5):
        out, attn = enc(x, return_attention=True)
        used = (attn != 0).flatten(1, 2).any(1)  # (B, P): patches that received any weight
        assert not (used & ~x["mask"]).any(), "a padding patch was sampled"
        assert used[0].sum() == 4 and used[1].sum() == 4 and not used[2].any()
        assert torch.isfinite(out.tokens).all() and out.mask[:2].all() and not out.mask[2].any()
    enc.eval()
    _, attn = enc(x, return_attention=True)
    assert torch.equal((attn != 0).flatten(1, 2).any(1), x["mask"] & x["present"][:, None])


def test_present_patient_with_empty_bag_gets_masked_zero_tokens():
    enc = _encoder()
    x = _batch()
    x["mask"][1] = False
    out = enc(x)
    assert not out.mask[1].any() and (out.tokens[1] == 0).all() and not out.present[1]
    assert torch.isfinite(out.tokens).all()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="spec"):
        TransMILEncoder(D, {})
    with pytest.raises(ValueError, match="n_heads"):
        TransMILEncoder(D, {"feature_dim": F}, n_heads=3)
    with pytest.raises(ValueError, match="sample_patches"):
        TransMILEncoder(D, {"feature_dim": F}, sample_patches=0)
    with pytest.raises(ValueError, match="mask"):
        _encoder()(dict(_batch(), mask=torch.ones(3, 29, dtype=torch.bool)))
