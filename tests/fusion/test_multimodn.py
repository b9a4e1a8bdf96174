"""MultiModNFusion: per-sample skipping, learned initial state, step order, state-change penalty."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.multimodn import MultiModNFusion, step_predictions

D = 8
NAMES = ["a", "b", "c"]


def _tokens(present: list[bool], n: int = 3, seed: int = 0) -> ModalityTokens:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(len(present), n, dtype=torch.bool)
    mask[:, -1] = False  # one padding slot
    return ModalityTokens.from_tokens(torch.randn(len(present), n, D, generator=g), mask, torch.tensor(present))


@pytest.fixture
def inputs() -> dict[str, ModalityTokens]:
    """Two patients; patient 0 lacks ``b`` (the middle step), patient 1 has everything."""
    return {"a": _tokens([True, True], seed=1), "b": _tokens([False, True], seed=2), "c": _tokens([True, True], seed=3)}


def _head(**kwargs) -> MultiModNFusion:
    torch.manual_seed(0)
    return MultiModNFusion(D, NAMES, **kwargs).eval()


def _row(toks: ModalityTokens, i: int) -> ModalityTokens:
    return ModalityTokens(toks.tokens[i : i + 1], toks.mask[i : i + 1], toks.present[i : i + 1])


def test_skipping_is_per_sample_not_per_batch(inputs):
    out = _head()(inputs)
    before_b, after_b = out.per_step[1], out.per_step[2]  # order a, b, c
    # patient 0 lacks b: its state passes through b's step bit for bit
    assert torch.equal(after_b[0], before_b[0])
    # patient 1 has b: updated (a whole-batch skip would leave it unchanged too)
    assert not torch.allclose(after_b[1], before_b[1])
    assert torch.equal(out.per_modality["b"][0], torch.zeros(D))
    assert torch.equal(out.per_modality["b"][1], after_b[1])
    assert torch.equal(out.per_modality["a"], out.per_step[1])


def test_patient_lacking_a_modality_equals_running_it_alone(inputs):
    head = _head()
    full = head(inputs)
    alone = head({m: _row(inputs[m], 0) for m in ("a", "c")})  # b omitted entirely
    torch.testing.assert_close(alone.pooled[0], full.pooled[0], rtol=1e-6, atol=1e-6)
    for s_alone, s_full in zip(alone.per_step, full.per_step):
        torch.testing.assert_close(s_alone[0], s_full[0], rtol=1e-6, atol=1e-6)
    other = head({m: _row(t, 1) for m, t in inputs.items()})
    torch.testing.assert_close(other.pooled[0], full.pooled[1], rtol=1e-6, atol=1e-6)


def test_initial_state_is_learned_and_is_step_zero(inputs):
    head = _head()
    assert any(p is head.initial_state for p in head.parameters())
    out = head(inputs)
    assert len(out.per_step) == len(NAMES) + 1
    assert all(s.shape == (2, D) for s in out.per_step)
    assert torch.equal(out.per_step[0], head.initial_state.detach().expand(2, -1))
    assert torch.equal(out.pooled, out.per_step[-1])
    out.pooled.sum().backward()
    assert head.initial_state.grad is not None and (head.initial_state.grad != 0).any()
    # a patient with nothing at all gets exactly the initial state
    empty = {m: t.select(torch.zeros(2, dtype=torch.bool)) for m, t in inputs.items()}
    with torch.no_grad():
        assert torch.equal(head(empty).pooled, head.initial_state.expand(2, -1))


def test_step_order_matters_but_dict_order_does_not(inputs):
    fwd = _head()
    rev = MultiModNFusion(D, NAMES, order=["c", "b", "a"]).eval()
    rev.load_state_dict(fwd.state_dict())
    out_fwd, out_rev = fwd(inputs), rev(inputs)
    assert not torch.allclose(out_fwd.pooled, out_rev.pooled), "the step order changed nothing"
    assert out_rev.extras["step_order"].tolist() == [2, 1, 0] and rev.last_order == ["c", "b", "a"]
    assert out_fwd.extras["step_order"].tolist() == [0, 1, 2]
    # per_modality is keyed by name: the first step's state in either order
    torch.testing.assert_close(out_rev.per_modality["c"], out_rev.per_step[1])
    reordered = dict(reversed(list(inputs.items())))
    torch.testing.assert_close(fwd(reordered).pooled, out_fwd.pooled, rtol=0, atol=0)


def test_shuffle_order_in_training_only(inputs):
    head = _head(shuffle_order=True, dropout=0.0).train()
    torch.manual_seed(3)
    orders = set()
    for _ in range(8):
        out = head(inputs)
        order = out.extras["step_order"]
        assert order.dtype == torch.long and sorted(order.tolist()) == [0, 1, 2]
        assert head.last_order == [NAMES[i] for i in order.tolist()]
        # per_modality follows the names wherever the step landed
        pos = head.last_order.index("c") + 1
        torch.testing.assert_close(out.per_modality["c"], out.per_step[pos])
        orders.add(tuple(order.tolist()))
    assert len(orders) > 1, "shuffle_order=True never changed the step order in training"
    head.eval()
    for _ in range(3):
        assert head(inputs).extras["step_order"].tolist() == [0, 1, 2]
    assert head.last_order == NAMES


def test_state_change_penalty_by_hand(inputs):
    """With every GRU weight and bias zero, each taken step halves the state: s' = s / 2."""
    head = _head(state_change_penalty=0.3)
    with torch.no_grad():
        for step in head.steps:
            for p in step.cell.parameters():
                p.zero_()
        head.initial_state.copy_(torch.arange(1.0, D + 1))
    out = head(inputs)
    s0 = torch.arange(1.0, D + 1)
    sq = s0.square().sum()
    # patient 0 takes a and c (s0 -> s0/2 -> s0/4); patient 1 takes a, b, c (-> s0/8)
    torch.testing.assert_close(out.pooled[0], s0 / 4)
    torch.testing.assert_close(out.pooled[1], s0 / 8)
    changes = [sq / 4, sq / 16] + [sq / 4, sq / 16, sq / 64]  # ||s_t - s_{t-1}||^2 per taken step
    expected = 0.3 * torch.stack(changes).mean()
    torch.testing.assert_close(out.aux_loss, expected)
    assert _head()(inputs).aux_loss is None


def test_step_predictions_trajectory(inputs):
    out = _head()(inputs)
    torch.manual_seed(1)
    decoder = torch.nn.Linear(D, 3)
    traj = step_predictions(out, decoder)
    assert traj.shape == (2, len(NAMES) + 1, 3)
    for t, s in enumerate(out.per_step):
        torch.testing.assert_close(traj[:, t], decoder(s))
    assert step_predictions(out, torch.nn.Linear(D, 1)).shape == (2, 4, 1)
    with pytest.raises(ValueError, match="per_step"):
        step_predictions(type(out)(pooled=out.pooled), decoder)


def test_bad_order_and_penalty_raise():
    with pytest.raises(ValueError, match="unknown: \\['z'\\]"):
        MultiModNFusion(D, NAMES, order=["a", "b", "z"])
    with pytest.raises(ValueError, match="missing: \\['c'\\]"):
        MultiModNFusion(D, NAMES, order=["a", "b"])
    with pytest.raises(ValueError, match="repeated: \\['a'\\]"):
        MultiModNFusion(D, NAMES, order=["a", "a", "b", "c"])
    with pytest.raises(ValueError, match="state_change_penalty"):
        MultiModNFusion(D, NAMES, state_change_penalty=-1.0)
