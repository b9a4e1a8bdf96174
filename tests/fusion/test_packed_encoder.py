"""Packed, length-bucketed inference equals torch's own nn.TransformerEncoder forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.packed_encoder import check_supported, encode_packed, layer_forward
from clinfuse.fusion.transformer import TransformerFusion

D = 16


def _encoder(norm_first: bool = True) -> nn.TransformerEncoder:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, 4, 2 * D, dropout=0.1, activation="gelu", batch_first=True, norm_first=norm_first)
    return nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(D), enable_nested_tensor=False).eval()


def _batch(b: int = 7, n: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """Real tokens scattered anywhere (not only at the front), position 0 always real, one patient
    with position 0 only; garbage at padding."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, D, generator=g)
    mask = torch.rand(b, n, generator=g) < 0.6
    mask[:, 0] = True
    mask[2, 1:] = False
    mask[3] = True
    x[~mask] = 1e3  # padding content must not matter
    return x, mask


def test_layer_forward_equals_the_layer_in_eval_mode():
    enc = _encoder()
    x, mask = _batch()
    layer = enc.layers[0]
    ref = layer(x, src_key_padding_mask=~mask)
    torch.testing.assert_close(layer_forward(layer, x, mask)[mask], ref[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer_forward(layer, x, mask, queries=1)[:, 0], ref[:, 0], rtol=1e-5, atol=1e-5)
    full = torch.ones_like(mask)
    torch.testing.assert_close(layer_forward(layer, x, None), layer(x, src_key_padding_mask=~full), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("queries", [1, 3])
def test_few_query_path_equals_the_layer_without_projecting_keys_and_values(queries):
    """The first positions' outputs read from the normalised tokens (W_k^T q and the weighted mean
    of z) equal the layer's, with and without padding keys, with a key bias that must cancel."""
    enc = _encoder()
    layer = enc.layers[1]
    with torch.no_grad():
        layer.self_attn.in_proj_bias.normal_(0, 0.5)  # non-zero key and value biases
    x, mask = _batch()
    ref = layer(x, src_key_padding_mask=~mask)
    out = layer_forward(layer, x, mask, queries=queries)
    assert out.shape == (x.shape[0], queries, D)
    real = mask[:, :queries]
    torch.testing.assert_close(out[real], ref[:, :queries][real], rtol=1e-5, atol=1e-5)
    full = torch.ones_like(mask)
    torch.testing.assert_close(layer_forward(layer, x, None, queries=queries),
                               layer(x, src_key_padding_mask=~full)[:, :queries], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_encode_packed_equals_the_encoder_at_every_real_position(chunk):
    enc = _encoder()
    x, mask = _batch()
    ref = enc(x, src_key_padding_mask=~mask)
    out = encode_packed(enc, x, mask, chunk=chunk)
    torch.testing.assert_close(out[mask], ref[mask], rtol=1e-5, atol=1e-5)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    first = encode_packed(enc, x, mask, first_only=True, chunk=chunk)
    torch.testing.assert_close(first, ref[:, 0], rtol=1e-5, atol=1e-5)


def test_encode_packed_gives_gradients():
    enc = _encoder()
    x, mask = _batch()
    x.requires_grad_(True)
    encode_packed(enc, x, mask, first_only=True, chunk=3).sum().backward()
    assert x.grad[mask].abs().sum() > 0 and torch.equal(x.grad[~mask], torch.zeros_like(x.grad[~mask]))
    assert all(p.grad is not None for p in enc.parameters())


def test_post_norm_layers_are_rejected():
    with pytest.raises(ValueError, match="pre-norm"):
        check_supported(_encoder(norm_first=False))


def _fusion_inputs(b: int = 9) -> dict[str, ModalityTokens]:
    g = torch.Generator().manual_seed(2)
    lengths = {"a": 12, "b": 3}
    out = {}
    for name, n in lengths.items():
        mask = torch.rand(b, n, generator=g) < 0.5
        mask[0] = False  # patient 0 has nothing at all
        out[name] = ModalityTokens.from_tokens(torch.randn(b, n, D, generator=g), mask)
    return out


def test_transformer_fusion_eval_path_equals_the_training_path_without_dropout():
    torch.manual_seed(0)
    head = TransformerFusion(D, ["a", "b"], n_heads=4, dropout=0.0)
    inputs = _fusion_inputs()
    train = head.train()(inputs)  # nn.TransformerEncoder's own forward (no dropout at p=0)
    head.eval()
    fast = head(inputs)
    torch.testing.assert_close(fast.pooled, train.pooled, rtol=1e-5, atol=1e-5)
    for m in ("a", "b"):
        torch.testing.assert_close(fast.per_modality[m], train.per_modality[m], rtol=1e-5, atol=1e-5)
    pooled = head.pooled_output(inputs)
    torch.testing.assert_close(pooled.pooled, train.pooled, rtol=1e-5, atol=1e-5)
    assert pooled.per_modality is None


def test_packed_path_only_where_it_pays(monkeypatch):
    """On CPU eval runs the packed path; where ``packed_pays`` says no (accelerators) the head keeps
    torch's padded forward, with the same outputs."""
    import clinfuse.fusion.transformer as transformer_module

    calls = []
    real = transformer_module.encode_packed
    monkeypatch.setattr(transformer_module, "encode_packed", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    torch.manual_seed(0)
    head = TransformerFusion(D, ["a", "b"], n_heads=4, dropout=0.0).eval()
    inputs = _fusion_inputs()
    packed = head(inputs).pooled
    assert len(calls) == 1
    monkeypatch.setattr(transformer_module, "packed_pays", lambda x: False)
    padded, pooled_only = head(inputs).pooled, head.pooled_output(inputs).pooled
    assert len(calls) == 1  # neither call used the packed path
    torch.testing.assert_close(padded, packed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled_only, packed, rtol=1e-5, atol=1e-5)
