"""GenomicsSNNEncoder: SNN blocks, LeCun-normal init and self-normalisation at initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from clinfuse.encoders.genomics_snn import GenomicsSNNEncoder

# SELU constants from Klambauer et al. 2017 (eq. 14), independent of torch's implementation
ALPHA, SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def np_selu(x: np.ndarray) -> np.ndarray:
    return SCALE * np.where(x > 0, x, ALPHA * (np.exp(x) - 1))


def layer_outputs(enc: GenomicsSNNEncoder, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every SNN block (after SELU and alpha dropout) on input ``x`` (B, G)."""
    outs = []
    blocks = [m for m in enc.modules() if isinstance(m, nn.AlphaDropout)]
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o.detach())) for m in blocks]
    n = x.shape[0]
    enc({"expression": x, "mutations": torch.zeros(n, 0), "present": torch.ones(n, dtype=torch.bool)})
    for h in hooks:
        h.remove()
    return outs


SPEC = {"genes": [f"G{i}" for i in range(256)], "mutations": [], "gene_groups": {}}


@pytest.mark.parametrize("train", [False, True])
def test_activations_stay_standardised_through_depth_at_init(train):
    torch.manual_seed(0)
    enc = GenomicsSNNEncoder(64, SPEC, hidden=(256, 256, 256, 256), dropout=0.1).train(train)
    x = torch.randn(4096, 256, generator=torch.Generator().manual_seed(1))
    outs = layer_outputs(enc, x)
    assert len(outs) == 5
    for depth, h in enumerate(outs):
        assert abs(h.mean().item()) < 0.1, (depth, h.mean().item())
        assert abs(h.var().item() - 1.0) < 0.2, (depth, h.var().item())


def test_default_torch_init_would_not_self_normalise():
    """The check above can fail: torch's default Linear init shrinks the variance with depth."""
    torch.manual_seed(0)
    enc = GenomicsSNNEncoder(64, SPEC, hidden=(256, 256, 256, 256)).eval()
    for m in enc.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    outs = layer_outputs(enc, torch.randn(4096, 256, generator=torch.Generator().manual_seed(1)))
    assert outs[-1].var().item() < 0.2


def test_lecun_normal_init_and_block_structure():
    torch.manual_seed(0)
    enc = GenomicsSNNEncoder(32, {"genes": [f"G{i}" for i in range(300)], "mutations": ["TP53"]}, hidden=(200,))
    linears = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(301, 200), (200, 32)]
    for lin in linears:
        assert abs(lin.weight.std().item() * np.sqrt(lin.in_features) - 1.0) < 0.05
        assert (lin.bias == 0).all()
    kinds = [type(m) for block in enc.blocks for m in block]
    assert kinds == [nn.Linear, nn.SELU, nn.AlphaDropout] * 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())


def test_forward_matches_a_numpy_reference():
    torch.manual_seed(0)
    enc = GenomicsSNNEncoder(8, GenomicsSNNEncoder.example_spec(), hidden=(16,)).eval()
    x = GenomicsSNNEncoder.example_inputs(batch_size=4, seed=3)
    out = enc(x)
    h = np.concatenate([x["expression"].numpy(), x["mutations"].numpy()], axis=1).astype(np.float64)
    for lin in (m for m in enc.modules() if isinstance(m, nn.Linear)):
        h = np_selu(h @ lin.weight.detach().numpy().T + lin.bias.detach().numpy())
    present = x["present"].numpy()
    np.testing.assert_allclose(out.tokens[present, 0].detach().numpy(), h[present], rtol=1e-5, atol=1e-5)
    assert out.tokens.shape == (4, 1, 8) and (out.tokens[~x["present"]] == 0).all()


def test_mutations_enter_the_token():
    torch.manual_seed(0)
    enc = GenomicsSNNEncoder(8, GenomicsSNNEncoder.example_spec(), hidden=(16,)).eval()
    x = GenomicsSNNEncoder.example_inputs(batch_size=3)
    flipped = dict(x, mutations=1.0 - x["mutations"])
    assert not torch.allclose(enc(x).tokens[0], enc(flipped).tokens[0])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="no genes"):
        GenomicsSNNEncoder(8, {"genes": [], "mutations": []})
    with pytest.raises(ValueError, match="hidden"):
        GenomicsSNNEncoder(8, GenomicsSNNEncoder.example_spec(), hidden=(0,))


def test_l1_penalty_is_l1_times_the_absolute_weights_and_pulls_them_to_zero():
    torch.manual_seed(0)
    enc = GenomicsSNNEncoder(8, {"genes": ["A", "B", "C"], "mutations": ["TP53"]}, hidden=(5,), l1=0.01)
    weights = [m.weight.detach().numpy() for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [w.shape for w in weights] == [(5, 4), (8, 5)]
    expected = 0.01 * sum(np.abs(w).sum() for w in weights)  # biases are not penalised
    penalty = enc.penalty()
    assert penalty.item() == pytest.approx(expected, rel=1e-6)
    penalty.backward()
    for m in (m for m in enc.modules() if isinstance(m, nn.Linear)):
        np.testing.assert_allclose(m.weight.grad.numpy(), 0.01 * np.sign(m.weight.detach().numpy()))
        assert m.bias.grad is None


def test_l1_zero_means_no_penalty_and_negative_is_refused():
    spec = {"genes": ["A"], "mutations": []}
    assert GenomicsSNNEncoder(8, spec, l1=0).penalty() is None
    for bad in (-1e-4, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="l1 must be >= 0 and finite"):
            GenomicsSNNEncoder(8, spec, l1=bad)


def test_the_module_adds_the_penalty_to_the_training_loss_but_not_to_task_loss():
    from clinfuse.experiments.module import ClinFuseModule

    spec = GenomicsSNNEncoder.example_spec()
    torch.manual_seed(0)
    model = ClinFuseModule(spec={"genomics": spec}, d_model=16, encoders={"genomics": "GenomicsSNNEncoder"},
                           fusion="masked_mean", modality_dropout=0.0).eval()
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value.detach())
    x = GenomicsSNNEncoder.example_inputs(batch_size=4)
    x["present"][:] = True
    batch = {"inputs": {"genomics": x},
             "labels": {"time": torch.tensor([1.0, 2.0, 3.0, 4.0]), "event": torch.tensor([1, 0, 1, 1])}}
    loss = model._step(batch, "train")
    penalty = model.encoders["genomics"].penalty().detach()
    assert penalty > 0
    torch.testing.assert_close(logged["train/penalty"], penalty)
    torch.testing.assert_close(loss.detach(), logged["train/task_loss"] + penalty)
