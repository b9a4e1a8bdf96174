"""CascadedFusion: skipping a stage is exact, the cascade is sequential, per_step is well defined."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.cascaded import CascadedFusion

D = 8
CLOSE = {"rtol": 0.0, "atol": 1e-6}


def _tokens(n: int, mask: list[list[bool]], seed: int) -> ModalityTokens:
    g = torch.Generator().manual_seed(seed)
    mask_t = torch.tensor(mask)
    return ModalityTokens.from_tokens(torch.randn(len(mask), n, D, generator=g), mask_t)


@pytest.fixture
def inputs() -> dict[str, ModalityTokens]:
    """Four patients; ``b`` is absent for patients 0 and 2, patient 3 has ``a`` only."""
    return {
        "a": _tokens(3, [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0]], seed=0),
        "b": _tokens(2, [[0, 0], [1, 1], [0, 0], [0, 0]], seed=1),
        "c": _tokens(4, [[1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], seed=2),
    }


def _head(modalities=("a", "b", "c"), **kwargs) -> CascadedFusion:
    torch.manual_seed(0)
    return CascadedFusion(D, list(modalities), n_heads=2, **kwargs).eval()


@pytest.mark.parametrize("n_queries", [1, 3])
def test_absent_modality_gives_exactly_the_model_without_that_stage(inputs, n_queries):
    full = _head(n_queries=n_queries)
    without_b = _head(("a", "c"), n_queries=n_queries)
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("stages.b.")}
    without_b.load_state_dict(state)  # strict: latent, norm and the a/c stages all copied
    lacking = torch.tensor([True, False, True, True])
    assert torch.equal(~inputs["b"].present, lacking)
    out = full(inputs)
    ref = without_b({m: t for m, t in inputs.items() if m != "b"})
    torch.testing.assert_close(out.pooled[lacking], ref.pooled[lacking], **CLOSE)
    for m in ("a", "c"):
        torch.testing.assert_close(out.per_modality[m][lacking], ref.per_modality[m][lacking], **CLOSE)
    # stages a, b, c versus a, c: the skipped stage b repeats the state after a
    for step, ref_step in zip(out.per_step, [ref.per_step[0], ref.per_step[0], ref.per_step[1]]):
        torch.testing.assert_close(step[lacking], ref_step[lacking], **CLOSE)
    assert not torch.allclose(out.pooled[1], ref.pooled[1]), "patient 1 has b: its stage must matter"


def test_order_matters_but_dict_order_does_not(inputs):
    forward = _head(order=["a", "b", "c"])
    backward = _head(order=["c", "b", "a"])
    backward.load_state_dict(forward.state_dict())  # same parameters, stages keyed by modality
    assert backward.order == ["c", "b", "a"] and backward.modalities == ["a", "b", "c"]
    assert all(inputs[m].present[1] for m in inputs)  # patient 1 has everything
    assert not torch.allclose(forward(inputs).pooled[1], backward(inputs).pooled[1], atol=1e-4)
    reordered = dict(reversed(list(inputs.items())))
    out, ref = forward(reordered), forward(inputs)
    torch.testing.assert_close(out.pooled, ref.pooled, rtol=0.0, atol=0.0)
    for s, r in zip(out.per_step, ref.per_step):
        torch.testing.assert_close(s, r, rtol=0.0, atol=0.0)


def test_skipping_is_per_sample(inputs):
    head = _head()
    ref = head(inputs)
    b = inputs["b"]
    g = torch.Generator().manual_seed(5)
    rows = torch.tensor([False, True, False, False])[:, None, None]  # (B, 1, 1)
    new_b = ModalityTokens.from_tokens(torch.where(rows, torch.randn(b.tokens.shape, generator=g), b.tokens), b.mask)
    out = head(dict(inputs, b=new_b))
    keep = torch.tensor([True, False, True, True])
    torch.testing.assert_close(out.pooled[keep], ref.pooled[keep], **CLOSE)
    assert not torch.allclose(out.pooled[1], ref.pooled[1]), "patient 1's b tokens changed, its output did not"
    assert (out.per_modality["b"][keep] == 0).all() and (out.per_modality["b"][1] != 0).any()
    # garbage in patient 0's (absent) b slots changes nobody
    junk = 1e3 * torch.randn(b.tokens.shape, generator=g)
    noisy = ModalityTokens(torch.where(rows, b.tokens, junk), b.mask, b.present)  # breaks zero-padding
    torch.testing.assert_close(head(dict(inputs, b=noisy)).pooled, ref.pooled, **CLOSE)


def _reference_steps(head: CascadedFusion, inputs: dict[str, ModalityTokens], i: int) -> list[torch.Tensor]:
    """Patient ``i`` alone, by hand: stages run only for its modalities, on its real tokens only."""
    query = head.latent[None]  # (1, Q, D)
    steps = []
    for m in head.order:
        t = inputs[m]
        if t.present[i]:
            real = t.tokens[i][t.mask[i]][None]  # (1, n_real, D)
            query = head.stages[m](query, real, torch.ones(real.shape[:2], dtype=torch.bool))  # (1, Q, D)
        steps.append(torch.nn.functional.layer_norm(query.mean(1), (D,), head.norm.weight, head.norm.bias)[0])
    return steps


@pytest.mark.parametrize("order", [None, ["c", "a", "b"]])
def test_per_step_is_the_pooled_state_after_each_stage(inputs, order):
    """per_step[k] = norm(mean over queries of the state after stage k); per_step[-1] is pooled."""
    head = _head(order=order, n_queries=2)
    out = head(inputs)
    assert len(out.per_step) == 3
    assert out.per_step[-1] is out.pooled
    for i in range(4):
        for k, expected in enumerate(_reference_steps(head, inputs, i)):
            torch.testing.assert_close(out.per_step[k][i], expected, rtol=1e-5, atol=1e-5)
    for k, m in enumerate(head.order):  # per_modality: the state right after m's stage, 0 if absent
        present = inputs[m].present
        torch.testing.assert_close(out.per_modality[m][present], out.per_step[k][present], rtol=0.0, atol=0.0)
        assert (out.per_modality[m][~present] == 0).all()
    assert _head(aux_outputs=False)(inputs).per_step is None


def test_constructor_validates():
    with pytest.raises(ValueError, match=r"unknown: \['x'\], missing: \['b'\]"):
        CascadedFusion(D, ["a", "b"], order=["a", "x"], n_heads=2)
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        CascadedFusion(D, ["a", "b"], order=["a", "a", "b"], n_heads=2)
    with pytest.raises(ValueError, match="must divide"):
        CascadedFusion(10, ["a"], n_heads=4)
    with pytest.raises(ValueError, match="n_queries"):
        CascadedFusion(D, ["a"], n_heads=2, n_queries=0)
    with pytest.raises(ValueError, match=r"\['x.y'\]"):
        CascadedFusion(D, ["a", "x.y"], n_heads=2)
