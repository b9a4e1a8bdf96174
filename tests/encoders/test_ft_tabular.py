"""FTTransformerEncoder: the feature tokenizer, missing values, unseen levels and key masking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clinfuse.encoders.ft_tabular import FTTransformerEncoder

D = 16
SPEC = FTTransformerEncoder.example_spec()  # 4 numeric features, categoricals of cardinality 4 and 5


def build(**kwargs) -> FTTransformerEncoder:
    torch.manual_seed(0)
    return FTTransformerEncoder(D, SPEC, **kwargs).eval()


def row(numeric, observed, categorical, present=True) -> dict[str, torch.Tensor]:
    """A batch of one patient."""
    return {
        "numeric": torch.tensor([numeric], dtype=torch.float32),
        "numeric_observed": torch.tensor([observed]),
        "categorical": torch.tensor([categorical]),
        "present": torch.tensor([present]),
    }


def test_linear_tokens_are_value_times_weight_plus_bias_and_missing_uses_its_embedding():
    enc = build()
    x = row([0.5, -1.5, 0.0, 2.0], [True, True, False, True], [2, 0])
    tokens, observed = enc.tokenize(x)
    w, b = enc.numeric_weight.detach().numpy(), enc.numeric_bias.detach().numpy()
    values = np.array([0.5, -1.5, 0.0, 2.0])
    for f in (0, 1, 3):
        np.testing.assert_allclose(tokens[0, f].detach().numpy(), values[f] * w[f] + b[f], rtol=1e-6, atol=1e-7)
    # the missing feature is its learned missing embedding, not the embedding of 0 (= the bias)
    np.testing.assert_allclose(tokens[0, 2].detach().numpy(), enc.missing_embedding[2].detach().numpy())
    assert not np.allclose(tokens[0, 2].detach().numpy(), b[2])
    table = enc.category_embedding.weight.detach().numpy()
    cat_bias = enc.category_bias.detach().numpy()
    np.testing.assert_allclose(tokens[0, 4].detach().numpy(), table[2] + cat_bias[0], rtol=1e-6)
    np.testing.assert_allclose(tokens[0, 5].detach().numpy(), table[4 + 0] + cat_bias[1], rtol=1e-6)  # offset 4
    assert observed.tolist() == [[True, True, False, True, True, False]]


def test_periodic_tokens_match_a_numpy_plr_reference():
    enc = build(numeric_embedding="periodic", n_frequencies=3, frequency_scale=0.5)
    values = [0.3, -2.0, 1.1, 0.0]
    tokens, _ = enc.tokenize(row(values, [True] * 4, [1, 1]))
    c = enc.frequencies.detach().numpy()  # (F, K)
    w = enc.periodic_weight.detach().numpy()  # (F, 2K, D)
    b = enc.numeric_bias.detach().numpy()
    for f, v in enumerate(values):
        feats = np.concatenate([np.cos(2 * math.pi * c[f] * v), np.sin(2 * math.pi * c[f] * v)])
        ref = np.maximum(feats @ w[f] + b[f], 0.0)
        np.testing.assert_allclose(tokens[0, f].detach().numpy(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("embedding", ["linear", "periodic"])
def test_missing_value_changes_the_output_versus_an_observed_zero(embedding):
    enc = build(numeric_embedding=embedding)
    seen = enc(row([0.2, 0.0, 1.0, -1.0], [True, True, True, True], [2, 3]))
    missing = enc(row([0.2, 0.0, 1.0, -1.0], [True, False, True, True], [2, 3]))
    assert not torch.allclose(seen.tokens[0, 0], missing.tokens[0, 0], atol=1e-4)  # CLS differs
    assert missing.mask.all()  # without mask_missing_keys every token stays real


def test_unseen_level_is_a_learned_level_and_out_of_range_names_the_feature():
    enc = build()
    outs = [enc(row([0.1, 0.2, 0.3, 0.4], [True] * 4, [level, 2])).tokens[0, 0] for level in (0, 1, 2)]
    assert all(torch.isfinite(o).all() for o in outs)
    assert not torch.allclose(outs[0], outs[1], atol=1e-4) and not torch.allclose(outs[1], outs[2], atol=1e-4)
    with pytest.raises(ValueError, match="admission_type"):
        enc(row([0.1, 0.2, 0.3, 0.4], [True] * 4, [2, 5]))  # cardinality 5: ids 0..4


def test_mask_missing_keys_removes_the_missing_features_from_attention():
    enc = build(mask_missing_keys=True)
    x = row([0.2, 0.5, 1.0, -1.0], [True, False, True, True], [2, 0])  # numeric 1 and categorical 1 missing
    ref = enc(x)
    assert ref.mask.tolist() == [[True, True, False, True, True, True, False]]
    # a random direction: a constant shift would vanish in the pre-norm LayerNorm and prove nothing
    shift = 3.0 * torch.randn(D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        enc.missing_embedding[1] += shift
        enc.category_embedding.weight[4] -= shift  # row 0 (missing) of the second categorical
    out = enc(x)
    torch.testing.assert_close(out.tokens, ref.tokens)  # CLS and every real token are invariant
    # without key masking the same change reaches the CLS token
    plain = build(mask_missing_keys=False)
    before = plain(x).tokens[0, 0]
    with torch.no_grad():
        plain.missing_embedding[1] += shift
    assert not torch.allclose(plain(x).tokens[0, 0], before, atol=1e-4)


def test_masked_missing_feature_equals_a_model_without_that_feature():
    """Key masking == deleting the feature from the spec (an independent reference model)."""
    full = build(mask_missing_keys=True)
    drop = 1
    spec = dict(SPEC, numeric_features=[f for i, f in enumerate(SPEC["numeric_features"]) if i != drop])
    small = FTTransformerEncoder(D, spec, mask_missing_keys=True).eval()
    state = full.state_dict()
    keep = [i for i in range(len(SPEC["numeric_features"])) if i != drop]
    for key in ("missing_embedding", "numeric_bias", "numeric_weight"):
        state[key] = state[key][keep]
    small.load_state_dict(state)
    x = FTTransformerEncoder.example_inputs(batch_size=4, seed=2)
    x["numeric_observed"][:, drop] = False
    x["numeric"][:, drop] = float("nan")  # never read
    reduced = dict(x, numeric=x["numeric"][:, keep], numeric_observed=x["numeric_observed"][:, keep])
    a, b = full(x), small(reduced)
    cols = [0, *[1 + i for i in keep], 5, 6]  # CLS, kept numerics, categoricals
    torch.testing.assert_close(a.tokens[:, cols], b.tokens, rtol=1e-5, atol=1e-6)
    assert not a.mask[:, 1 + drop].any()


@pytest.mark.parametrize("kwargs", [{"numeric_embedding": "periodic"}, {"mask_missing_keys": True}])
def test_options_ignore_padding_and_absent_patients_exactly(kwargs):
    enc = build(**kwargs)
    x = FTTransformerEncoder.example_inputs(batch_size=4)
    ref = enc(x)
    noisy = {k: v.clone() for k, v in x.items()}
    noisy["numeric"][~x["numeric_observed"]] = float("nan")
    noisy["numeric"][-1] = float("inf")
    noisy["numeric_observed"][-1] = ~x["numeric_observed"][-1]
    noisy["categorical"][-1] = 10**6  # absent patient: out of range but never read
    out = enc(noisy)
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.mask, ref.mask)
    assert not out.mask[-1].any() and (out.tokens[-1] == 0).all()


@pytest.mark.parametrize("kwargs", [{"numeric_embedding": "periodic"}, {"mask_missing_keys": True}])
def test_options_give_every_used_parameter_a_gradient(kwargs):
    enc = build(**kwargs).train()
    out = enc(FTTransformerEncoder.example_inputs(batch_size=4))
    out.tokens.square().sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "missing_embedding":  # with key masking a missing token only feeds masked outputs
            assert (p.grad != 0).any(), name


def test_token_count_and_all_absent_batch():
    enc = build()
    x = FTTransformerEncoder.example_inputs(batch_size=3)
    out = enc(x)
    assert out.tokens.shape == (3, 1 + 4 + 2, D) and out.times is None
    none = enc(dict(x, present=torch.zeros(3, dtype=torch.bool)))
    assert not none.mask.any() and (none.tokens == 0).all()


def test_bad_options_raise():
    with pytest.raises(ValueError, match="numeric_embedding"):
        FTTransformerEncoder(D, SPEC, numeric_embedding="quantile")
    with pytest.raises(ValueError, match="n_heads"):
        FTTransformerEncoder(18, SPEC, n_heads=4)
    with pytest.raises(ValueError, match="cardinalit"):
        FTTransformerEncoder(D, dict(SPEC, categorical_cardinalities=[4]))
