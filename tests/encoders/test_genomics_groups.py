"""GenomicsGroupEncoder: one token per gene group, batched per-group SNNs, group validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.encoders.genomics_groups import GenomicsGroupEncoder

# SELU constants from Klambauer et al. 2017 (eq. 14), independent of torch's implementation
ALPHA, SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
SPEC = GenomicsGroupEncoder.example_spec()  # 12 genes: groups of 5, 2, 3; genes 10, 11 ungrouped; 4 mutations
D = 8


def build(spec=SPEC, **kwargs) -> GenomicsGroupEncoder:
    torch.manual_seed(0)
    kwargs.setdefault("hidden", (16,))
    return GenomicsGroupEncoder(D, spec, **kwargs).eval()


def batch(n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "expression": torch.randn(n, 12, generator=g),
        "mutations": (torch.rand(n, 4, generator=g) < 0.5).float(),
        "present": torch.ones(n, dtype=torch.bool),
    }


def standard_normal(n: int, genes: int) -> dict[str, torch.Tensor]:
    """``n`` present patients with standard-normal expression and no mutation columns."""
    g = torch.Generator().manual_seed(1)
    return {"expression": torch.randn(n, genes, generator=g), "mutations": torch.zeros(n, 0),
            "present": torch.ones(n, dtype=torch.bool)}


def test_group_names_and_token_order():
    assert build().group_names == ["cell_cycle", "immune", "metabolism", "other", "mutations"]
    assert build(other_group=False, mutation_token=False).group_names == ["cell_cycle", "immune", "metabolism"]
    out = build()(batch())
    assert out.tokens.shape == (3, 5, D) and out.mask.all() and out.times is None


@pytest.mark.parametrize(
    "key, column, token",
    [("expression", 0, 0), ("expression", 4, 0), ("expression", 5, 1), ("expression", 9, 2),
     ("expression", 11, 3), ("mutations", 2, 4)],
)
def test_changing_one_input_changes_only_its_group_token(key, column, token):
    enc = build()
    x = batch()
    ref = enc(x).tokens
    y = {k: v.clone() for k, v in x.items()}
    if key == "expression":
        y[key][:, column] += 1.5
    else:
        y[key][:, column] = 1.0 - y[key][:, column]  # flip the mutation flag
    out = enc(y).tokens
    changed = [(out[:, k] - ref[:, k]).abs().max().item() > 1e-6 for k in range(5)]
    assert changed == [k == token for k in range(5)]


def test_without_other_and_mutation_tokens_those_inputs_are_ignored():
    enc = build(other_group=False, mutation_token=False)
    x = batch()
    y = dict(x, mutations=1.0 - x["mutations"], expression=x["expression"].clone())
    y["expression"][:, 10:] = 7.0
    assert torch.equal(enc(x).tokens, enc(y).tokens)


def test_overlapping_groups_are_allowed():
    enc = build(groups={"a": ["GENE0", "GENE1"], "b": ["GENE1", "GENE2", "GENE3"]}, other_group=False)
    x = batch()
    y = dict(x, expression=x["expression"].clone())
    y["expression"][:, 1] += 1.0
    diff = (enc(y).tokens - enc(x).tokens).abs().amax(dim=(0, 2))
    assert (diff[:2] > 1e-6).all() and diff[2] == 0  # GENE1 moves a and b, not the mutation token


def test_batched_groups_match_a_per_group_loop_reference():
    """Each token equals its own SNN (SELU hidden blocks, linear projection) applied to its own
    columns, plus its group's embedding (numpy, one group at a time)."""
    enc = build(hidden=(16, 12))
    x = batch(4, seed=5)
    out = enc(x).tokens.detach().numpy()
    cols = {**SPEC["gene_groups"], "other": [10, 11], "mutations": [12, 13, 14, 15]}
    full = np.concatenate([x["expression"].numpy(), x["mutations"].numpy()], axis=1).astype(np.float64)

    def selu(v):
        return SCALE * np.where(v > 0, v, ALPHA * (np.exp(v) - 1))

    for k, name in enumerate(enc.group_names):
        w1, b1 = enc.first_layer_weight(name).detach().numpy(), enc.first_bias[k].detach().numpy()
        h = full[:, cols[name]] @ w1 + b1
        for w, b in zip(enc.weights, enc.biases):
            h = selu(h) @ w[k].detach().numpy() + b[k].detach().numpy()
        np.testing.assert_allclose(out[:, k], h + enc.group_embedding[k].detach().numpy(), rtol=1e-5, atol=1e-5)


def test_group_embedding_tells_groups_with_equal_networks_apart():
    """Two groups whose networks and inputs are equal give equal tokens without the embedding and
    different ones with it: the fusion can tell which group a token describes."""
    spec = {"genes": ["A", "B", "C", "D"], "mutations": [], "gene_groups": {"g1": [0, 1], "g2": [2, 3]}}
    x = {"expression": torch.tensor([[0.3, -1.2, 0.3, -1.2]]), "mutations": torch.zeros(1, 0),
         "present": torch.ones(1, dtype=torch.bool)}
    for flag in (False, True):
        enc = build(spec, other_group=False, group_embedding=flag)
        with torch.no_grad():
            enc.first_weight[0][1] = enc.first_weight[0][0]  # g2's network := g1's
            enc.first_bias[1] = enc.first_bias[0]
            for w, b in zip(enc.weights, enc.biases):
                w[1], b[1] = w[0], b[0]
        tokens = enc(x).tokens[0]
        assert torch.allclose(tokens[0], tokens[1]) is (not flag)
    assert build(spec, group_embedding=False).group_embedding is None


def test_lecun_init_uses_each_groups_own_fan_in_and_padding_rows_are_zero():
    genes = [f"G{i}" for i in range(600)]
    spec = {"genes": genes, "mutations": [], "gene_groups": {"small": list(range(3)), "big": list(range(3, 503))}}
    enc = build(spec, hidden=(400,), other_group=False)
    for name, n in (("small", 3), ("big", 500)):
        std = enc.first_layer_weight(name).std().item()
        assert abs(std * np.sqrt(n) - 1.0) < 0.1, (name, std)
    # the 500-gene group is padded to 512 rows: the padding rows are zero
    big = next(w for w in enc.first_weight if w.shape[1] == 512)
    assert (big[0, 500:] == 0).all()


def test_tokens_are_standardised_at_init():
    genes = [f"G{i}" for i in range(200)]
    spec = {"genes": genes, "mutations": [], "gene_groups": {"a": list(range(7)), "b": list(range(7, 200))}}
    enc = build(spec, hidden=(256, 256), other_group=False, group_embedding=False)
    tokens = enc(standard_normal(4096, 200)).tokens
    for k in range(2):
        assert abs(tokens[:, k].mean().item()) < 0.1 and abs(tokens[:, k].var().item() - 1.0) < 0.2


def test_size_buckets_bound_the_number_of_einsums_and_the_padding():
    """300 groups of 5..500 genes: a handful of buckets, first-layer weights under twice the dense size."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 501, size=300)
    genes = [f"G{i}" for i in range(2000)]
    groups = {f"p{k}": rng.choice(2000, n, replace=False).tolist() for k, n in enumerate(sizes)}
    spec = {"genes": genes, "mutations": [], "gene_groups": groups}
    enc = GenomicsGroupEncoder(D, spec, hidden=(4,), other_group=False)
    assert enc.n_buckets <= 8
    n_first = sum(w.numel() for w in enc.first_weight)
    assert n_first < 2 * int(sizes.sum()) * 4
    out = enc(standard_normal(2, 2000))
    assert out.tokens.shape == (2, 300, D)


def test_user_groups_with_an_unknown_gene_raise_naming_it():
    with pytest.raises(ValueError, match="NOTAGENE"):
        build(groups={"immune": ["GENE5", "NOTAGENE"]})


def test_bad_spec_groups_raise():
    with pytest.raises(ValueError, match="outside"):
        build(dict(SPEC, gene_groups={"x": [0, 12]}))
    with pytest.raises(ValueError, match="no genes"):
        build(groups={"empty": []})
    with pytest.raises(ValueError, match="reserved"):
        build(dict(SPEC, gene_groups={"other": [0, 1]}))
    with pytest.raises(ValueError, match="no gene groups"):
        build(dict(SPEC, gene_groups={}), other_group=False, mutation_token=False)
    with pytest.raises(ValueError, match="unknown group"):
        build().first_layer_weight("nope")


def test_spec_without_groups_falls_back_to_one_other_group():
    enc = build(dict(SPEC, gene_groups={}))
    assert enc.group_names == ["other", "mutations"]
