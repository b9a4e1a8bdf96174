"""STraTSEncoder: CVE, set-model permutation behaviour, padding exclusion, summary pooling and times."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.strats import ContinuousValueEmbedding, STraTSEncoder

SPEC = {"variables": ["hr", "sbp", "spo2", "temp", "lactate"], "horizon_hours": 48.0}


def build(**kwargs) -> STraTSEncoder:
    torch.manual_seed(0)
    return STraTSEncoder(16, SPEC, n_heads=2, **kwargs).eval()


def batch(lengths: list[int], t_len: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Patients with ``lengths`` observations each (a prefix of the ``t_len`` slots); all present."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = torch.arange(t_len)[None, :] < torch.tensor(lengths)[:, None]
    return {
        "times": torch.rand(b, t_len, generator=g) * 48,
        "variables": torch.randint(0, 5, (b, t_len), generator=g),
        "values": torch.randn(b, t_len, generator=g),
        "mask": mask,
        "present": torch.ones(b, dtype=torch.bool),
    }


def test_cve_shape_and_formula():
    torch.manual_seed(0)
    cve = ContinuousValueEmbedding(16)
    first, last = cve.net[0], cve.net[2]
    assert (first.out_features, last.in_features, last.bias) == (4, 4, None)  # sqrt(16) hidden, no out bias
    x = torch.randn(3, 7)
    out = cve(x)
    assert out.shape == (3, 7, 16)
    w1, b1, w2 = first.weight[:, 0], first.bias, last.weight
    expected = torch.tanh(x[..., None] * w1 + b1) @ w2.T  # W2 tanh(W1 x + b1), written out
    torch.testing.assert_close(out, expected)
    assert ContinuousValueEmbedding(64).net[0].out_features == 8
    assert ContinuousValueEmbedding(64, hidden=5).net[0].out_features == 5


def test_output_layout_mask_and_times():
    enc = build(n_summary_tokens=2)
    x = batch([3, 0, 8])
    x["present"][2] = False
    out = enc(x)
    assert out.tokens.shape == (3, 2 + 8, 16)
    torch.testing.assert_close(out.mask[:, 2:], x["mask"] & x["present"][:, None], rtol=0, atol=0)
    assert out.mask[0, :2].all() and not out.mask[1].any() and not out.mask[2].any()
    assert out.present.tolist() == [True, False, False]
    # summary times = the patient's last observed time; triplet times = observation times
    last = x["times"][0, :3].max()
    assert out.times[0, 0] == last and out.times[0, 1] == last
    torch.testing.assert_close(out.times[0, 2:5], x["times"][0, :3], rtol=0, atol=0)
    assert (out.times[1:] == 0).all()
    no_summary = build(n_summary_tokens=0)(x)
    assert no_summary.tokens.shape == (3, 8, 16)


def test_permuting_observations_permutes_tokens_and_keeps_summary():
    enc = build()
    x = batch([6, 8, 4], seed=1)
    ref = enc(x)
    g = torch.Generator().manual_seed(5)
    perm = torch.arange(8).repeat(3, 1)
    for i, n in enumerate([6, 8, 4]):
        perm[i, :n] = torch.randperm(n, generator=g)  # shuffle the observed prefix only
    assert not torch.equal(perm, torch.arange(8).repeat(3, 1))
    shuffled = {k: v.gather(1, perm) if k != "present" else v for k, v in x.items()}
    out = enc(shuffled)
    torch.testing.assert_close(out.tokens[:, 0], ref.tokens[:, 0], rtol=1e-5, atol=1e-5)  # summary
    # output triplet i of the shuffled batch is input triplet perm[i]
    back = ref.tokens[:, 1:].gather(1, perm[..., None].expand(-1, -1, 16))
    torch.testing.assert_close(out.tokens[:, 1:], back, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.times[:, 1:], ref.times[:, 1:].gather(1, perm), rtol=0, atol=0)


def test_tokens_are_contextual_but_padding_slots_are_not_keys():
    enc = build()
    x = batch([4, 5], t_len=6, seed=2)
    ref = enc(x)
    # changing observation 1 changes token 0: the transformer mixes observed triplets
    x2 = {k: v.clone() for k, v in x.items()}
    x2["values"][0, 1] += 3.0
    assert not torch.allclose(enc(x2).tokens[0, 1], ref.tokens[0, 1])
    # extra padding slots (a longer batch) change nothing for the real tokens
    wide = {k: torch.cat([v, torch.zeros(2, 5, dtype=v.dtype)], 1) if k != "present" else v for k, v in x.items()}
    wide["times"][:, 6:] = 7.0
    out = enc(wide)
    torch.testing.assert_close(out.tokens[:, : 1 + 6], ref.tokens, rtol=1e-5, atol=1e-5)
    assert not out.mask[:, 1 + 6 :].any()


def test_summary_is_the_stratS_fusion_attention_of_the_triplets():
    enc = build(n_summary_tokens=2)
    x = batch([5, 2, 7], seed=3)
    out = enc(x)
    with torch.no_grad():
        for i, n in enumerate([5, 2, 7]):
            ctx = out.tokens[i, 2 : 2 + n]  # (n, D): the contextual triplets of patient i
            lin1, lin2 = enc.pool_score[0], enc.pool_score[2]
            for k in range(2):
                score = torch.tanh(ctx @ lin1.weight.T + lin1.bias) @ lin2.weight[k] + lin2.bias[k]  # (n,)
                weight = torch.exp(score - score.max())
                weight = weight / weight.sum()
                expected = (weight[:, None] * ctx).sum(0) + enc.summary_embedding[k]
                torch.testing.assert_close(out.tokens[i, k], expected, rtol=1e-5, atol=1e-6)


def test_time_is_scaled_by_the_horizon():
    enc = build()
    x = batch([3], seed=4)
    spec2 = dict(SPEC, horizon_hours=96.0)
    torch.manual_seed(0)
    enc2 = STraTSEncoder(16, spec2, n_heads=2).eval()
    x2 = dict(x, times=x["times"] * 2)  # same relative times under a doubled horizon
    torch.testing.assert_close(enc2(x2).tokens, enc(x).tokens)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_heads"):
        STraTSEncoder(16, SPEC, n_heads=3)
    with pytest.raises(ValueError, match="horizon_hours"):
        STraTSEncoder(16, dict(SPEC, horizon_hours=0.0))
    with pytest.raises(ValueError, match="variables"):
        build()(dict(batch([2]), variables=torch.full((1, 8), 5)))
