"""HeteroGraphFusion: per-patient graphs, prompt completion of missing modalities, completion loss."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.hetero_graph import HeteroGraphFusion

D = 8
NAMES = ["a", "b", "c"]


def _inputs(batch: int = 4, seed: int = 0) -> dict[str, ModalityTokens]:
    """Patient 0 has everything, 1 lacks ``b``, 2 lacks ``a`` and ``c``, the last one has nothing."""
    g = torch.Generator().manual_seed(seed)
    rows = {"a": [1, 1, 0], "b": [1, 0, 1], "c": [1, 1, 0]}
    sizes = {"a": 3, "b": 1, "c": 5}
    out = {}
    for m in NAMES:
        row = torch.zeros(batch, dtype=torch.bool)
        row[:3] = torch.tensor(rows[m], dtype=torch.bool)
        mask = (torch.rand(batch, sizes[m], generator=g) < 0.6) & row[:, None]
        mask[:, 0] |= row
        out[m] = ModalityTokens.from_tokens(torch.randn(batch, sizes[m], D, generator=g), mask)
    return out


def _head(**kwargs) -> HeteroGraphFusion:
    torch.manual_seed(0)
    return HeteroGraphFusion(D, NAMES, n_heads=2, **kwargs).eval()


def _take(inputs: dict[str, ModalityTokens], i: int) -> dict[str, ModalityTokens]:
    return {m: ModalityTokens(t.tokens[i : i + 1], t.mask[i : i + 1], t.present[i : i + 1]) for m, t in inputs.items()}


def test_graph_never_connects_two_patients_and_has_every_modality():
    inputs = _inputs()
    x, edges, batch = _head(n_prompts=2).build_graph(inputs)
    assert set(x) == {*NAMES, "hub", "patient"}
    relations = {rel for _, rel, _ in edges}
    assert relations == {"pool", "broadcast", "cross", "readout"}
    for (src, rel, dst), e in edges.items():
        assert e.dtype == torch.long and e.shape[0] == 2 and e.shape[1] > 0
        assert e[0].max() < x[src].shape[0] and e[1].max() < x[dst].shape[0]
        assert torch.equal(batch[src][e[0]], batch[dst][e[1]]), f"{(src, rel, dst)} joins two patients"
    for m, t in inputs.items():
        # real tokens, plus 2 prompt nodes per patient lacking m: every patient has every modality
        expected = t.mask.sum(1) + 2 * (~t.present).long()
        assert torch.equal(torch.bincount(batch[m], minlength=4), expected)
    cross = edges[("hub", "cross", "hub")]
    assert cross.shape[1] == 4 * 3 * 2  # B * M * (M - 1): other modalities of the same patient only
    assert (cross[0] != cross[1]).all()


def test_omitted_and_absent_build_the_same_graph():
    head, inputs = _head(), _inputs()
    absent = dict(inputs, b=inputs["b"].select(torch.zeros(4, dtype=torch.bool)))
    omitted = {m: t for m, t in inputs.items() if m != "b"}
    (xa, ea, ba), (xo, eo, bo) = head.build_graph(absent), head.build_graph(omitted)
    assert list(ea) == list(eo)
    for k in ea:
        assert torch.equal(ea[k], eo[k])
    for k in xa:
        torch.testing.assert_close(xa[k], xo[k], rtol=0, atol=0)
        assert torch.equal(ba[k], bo[k])


def test_batched_output_equals_each_patient_alone():
    head, inputs = _head(), _inputs()
    full = head(inputs)
    for i in range(4):
        alone = head(_take(inputs, i))
        torch.testing.assert_close(alone.pooled[0], full.pooled[i], rtol=1e-5, atol=1e-5)
        for m in NAMES:
            torch.testing.assert_close(alone.per_modality[m][0], full.per_modality[m][i], rtol=1e-5, atol=1e-5)


def test_missing_modality_is_completed_by_its_prompt():
    head, inputs = _head(), _inputs()
    ref = head(inputs)
    with torch.no_grad():
        head.prompts[NAMES.index("b")] += 1.0  # only patients 1 and 3 lack b
    out = head(inputs)
    for i in (1, 3):
        assert not torch.allclose(out.pooled[i], ref.pooled[i]), f"patient {i} lacks b but ignores b's prompt"
    for i in (0, 2):  # they have b: its prompt is no node of theirs
        torch.testing.assert_close(out.pooled[i], ref.pooled[i], rtol=0, atol=0)
        for m in NAMES:
            torch.testing.assert_close(out.per_modality[m][i], ref.per_modality[m][i], rtol=0, atol=0)
    assert (out.per_modality["b"][[1, 3]] == 0).all()  # prompts are never reported as data
    assert not torch.allclose(out.aux_loss, ref.aux_loss)  # ... but they are trained on patients 0, 2


def test_patient_without_data_uses_the_empty_context_and_is_finite():
    head, inputs = _head(), _inputs()
    ref = head(inputs)
    assert torch.isfinite(ref.pooled).all()
    with torch.no_grad():
        head.empty_context += 1.0
    out = head(inputs)
    assert not torch.allclose(out.pooled[3], ref.pooled[3])
    # patient 2 has only b: nothing it lacks is conditioned on "nothing"; patients 0, 1 neither
    torch.testing.assert_close(out.pooled[:3], ref.pooled[:3], rtol=0, atol=0)


def _completion_by_hand(head: HeteroGraphFusion, inputs: dict[str, ModalityTokens]) -> torch.Tensor:
    """Independent loops over patients and modalities: leave-one-out context, MLP, squared error."""
    errors = []
    for i in range(inputs["a"].batch_size):
        means = {}
        for m, t in inputs.items():
            if t.present[i]:
                means[m] = t.tokens[i][t.mask[i]].mean(0)
        for j, m in enumerate(NAMES):
            if m not in means:
                continue
            others = [v for k, v in means.items() if k != m]
            context = torch.stack(others).mean(0) if others else head.empty_context
            ln = torch.nn.functional.layer_norm(context, (D,), head.context_mlp[0].weight, head.context_mlp[0].bias)
            hidden = torch.nn.functional.gelu(head.context_mlp[1](ln))
            guess = head.prompts[j].mean(0) + hidden @ head.context_out[j] + head.context_bias[j]
            errors.append(((guess - means[m]) ** 2).mean())
    return torch.stack(errors).mean()


def test_completion_loss_matches_a_hand_computation():
    head, inputs = _head(completion_weight=0.5), _inputs()
    out = head(inputs)
    assert out.aux_loss.dim() == 0
    torch.testing.assert_close(out.aux_loss, 0.5 * _completion_by_hand(head, inputs), rtol=1e-5, atol=1e-6)


def test_completion_loss_when_everyone_or_no_one_has_data():
    head = _head()
    full = {m: ModalityTokens.from_tokens(torch.randn(2, 2, D), torch.ones(2, 2, dtype=torch.bool)) for m in NAMES}
    # everyone has everything: no prompt node in the graph, but every completion is still trained
    aux = head(full).aux_loss
    assert aux > 0
    torch.testing.assert_close(aux, 0.1 * _completion_by_hand(head, full), rtol=1e-5, atol=1e-6)
    nobody = {m: t.select(torch.zeros(2, dtype=torch.bool)) for m, t in full.items()}
    aux = head.train()(nobody).aux_loss
    assert aux.dim() == 0 and aux.item() == 0.0 and aux.requires_grad
    assert _head(completion_weight=0.0)(full).aux_loss is None


def test_completion_loss_decreases_when_prompts_are_trained():
    head, inputs = _head(), _inputs()
    params = [head.prompts, head.empty_context, head.context_out, head.context_bias, *head.context_mlp.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = head(inputs).aux_loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


@pytest.mark.parametrize("use", ["pooled", "all"])
def test_every_parameter_gets_a_gradient(use):
    head = _head(n_layers=1).train()
    out = head(_inputs())
    g = torch.Generator().manual_seed(0)
    loss = (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
    if use == "all":
        loss = loss + sum((v * torch.randn(v.shape, generator=g)).sum() for v in out.per_modality.values()) + out.aux_loss
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and (p.grad != 0).any() and torch.isfinite(p.grad).all(), name


def test_single_modality_head_and_several_prompts():
    torch.manual_seed(0)
    head = HeteroGraphFusion(D, ["a"], n_layers=1, n_prompts=3, n_heads=2).eval()
    inputs = {"a": _inputs()["a"]}
    x, edges, _ = head.build_graph(inputs)
    assert ("hub", "cross", "hub") not in edges
    out = head(inputs)
    assert out.pooled.shape == (4, D) and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_layers": 0}, "n_layers"),
        ({"n_prompts": 0}, "n_prompts"),
        ({"completion_weight": -1.0}, "completion_weight"),
        ({"n_heads": 3}, "n_heads"),
    ],
)
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HeteroGraphFusion(D, NAMES, **kwargs)


def test_reserved_modality_names_are_rejected():
    with pytest.raises(ValueError, match="patient"):
        HeteroGraphFusion(D, ["a", "patient"])
    with pytest.raises(ValueError, match="hub"):
        HeteroGraphFusion(D, ["hub"])
