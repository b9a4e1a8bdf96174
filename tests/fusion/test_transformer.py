"""TransformerFusion: masking is exact (same as running on the real tokens only), token capping."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.transformer import TransformerFusion, keep_last_tokens

D = 8


def _inputs() -> dict[str, ModalityTokens]:
    g = torch.Generator().manual_seed(0)
    a_mask = torch.tensor([[True, True, False, True], [False, False, False, False], [True, False, False, False]])
    b_mask = torch.tensor([[True], [True], [False]])
    return {
        "a": ModalityTokens.from_tokens(torch.randn(3, 4, D, generator=g), a_mask),
        "b": ModalityTokens.from_tokens(torch.randn(3, 1, D, generator=g), b_mask),
    }


def _unpadded(head: TransformerFusion, inputs: dict[str, ModalityTokens], i: int) -> torch.Tensor:
    """Reference: run the head's own encoder on patient i's real tokens only, with no mask at all."""
    seq = [head.cls[None]]
    for j, m in enumerate(head.modalities):
        if m in inputs:
            t = inputs[m]
            seq.append(t.tokens[i][t.mask[i]] + head.type_embedding[j])
    x = torch.cat(seq)[None]  # (1, 1 + n_real, D)
    return head.encoder(x)[0]  # (1 + n_real, D)


def test_masked_attention_equals_attention_over_real_tokens_only():
    torch.manual_seed(0)
    head = TransformerFusion(D, ["a", "b"], n_heads=2).eval()
    inputs = _inputs()
    out = head(inputs)
    for i in range(3):
        ref = _unpadded(head, inputs, i)
        torch.testing.assert_close(out.pooled[i], ref[0], rtol=1e-5, atol=1e-6)
        n_a = int(inputs["a"].mask[i].sum())
        expected_a = ref[1 : 1 + n_a].mean(0) if n_a else torch.zeros(D)
        torch.testing.assert_close(out.per_modality["a"][i], expected_a, rtol=1e-5, atol=1e-6)


def test_keep_last_tokens_by_hand():
    tokens = torch.arange(10.0).reshape(2, 5, 1)
    mask = torch.tensor([[True, False, True, True, True], [False, True, False, False, False]])
    kept, kept_mask = keep_last_tokens(ModalityTokens.from_tokens(tokens, mask), 2)
    assert torch.equal(kept[..., 0], torch.tensor([[3.0, 4.0], [6.0, 0.0]]))
    assert torch.equal(kept_mask, torch.tensor([[True, True], [True, False]]))


def test_keep_last_tokens_by_time_keeps_a_leading_summary_token():
    # STraTS puts summary tokens first, stamped with the patient's last observation time
    tokens = torch.arange(10.0).reshape(2, 5, 1)
    mask = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    times = torch.tensor([[9.0, 1.0, 2.0, 9.0, 99.0], [5.0, 1.0, 5.0, 3.0, 2.0]])  # 99: padding, ignored
    kept, kept_mask = keep_last_tokens(ModalityTokens(tokens * mask[..., None], mask, mask.any(1), times * mask), 2)
    # patient 0: the two tokens at time 9 (positions 0 and 3); patient 1: the two at time 5 (0 and 2), in order
    assert torch.equal(kept[..., 0], torch.tensor([[0.0, 3.0], [5.0, 7.0]])) and bool(kept_mask.all())
    times[0, 1] = 9.0  # three tokens at the latest time: the later positions win the tie
    kept, _ = keep_last_tokens(ModalityTokens(tokens * mask[..., None], mask, mask.any(1), times * mask), 2)
    assert torch.equal(kept[0, :, 0], torch.tensor([1.0, 3.0]))


def test_max_tokens_per_modality_equals_passing_only_the_last_tokens():
    torch.manual_seed(0)
    head = TransformerFusion(D, ["a", "b"], n_heads=2, max_tokens_per_modality=2).eval()
    inputs = _inputs()
    a = inputs["a"]
    trimmed_mask = a.mask.clone()
    trimmed_mask[0, 0] = False  # patient 0 has 3 real tokens in "a"; the first one goes
    trimmed = dict(inputs, a=ModalityTokens.from_tokens(a.tokens, trimmed_mask))
    torch.testing.assert_close(head(inputs).pooled, head(trimmed).pooled, rtol=1e-5, atol=1e-6)
    uncapped = TransformerFusion(D, ["a", "b"], n_heads=2).eval()
    uncapped.load_state_dict(head.state_dict())
    assert not torch.allclose(uncapped(inputs).pooled[0], head(inputs).pooled[0]), "the cap changed nothing"
    torch.testing.assert_close(uncapped(inputs).pooled[1:], head(inputs).pooled[1:])  # <= 2 tokens: same


def test_constructor_validates():
    with pytest.raises(ValueError, match="must divide"):
        TransformerFusion(10, ["a"], n_heads=4)
    with pytest.raises(ValueError, match="max_tokens_per_modality"):
        TransformerFusion(8, ["a"], max_tokens_per_modality=0)


def test_sequence_without_autograd_is_the_same_tensor_whatever_the_padding_holds():
    """Without autograd the CLS + tokens sequence is written into one buffer in place; it must equal
    the autograd path's exactly, with NaN padding zeroed and bfloat16 tokens promoted."""
    torch.manual_seed(0)
    head = TransformerFusion(D, ["a", "b"], n_heads=2).eval()
    inputs = _inputs()
    raw = inputs["a"].tokens.clone()
    raw[~inputs["a"].mask] = float("nan")  # a contract-breaking encoder: padding must still vanish
    inputs["a"] = ModalityTokens(raw, inputs["a"].mask, inputs["a"].present)
    inputs["b"] = ModalityTokens(inputs["b"].tokens.bfloat16(), inputs["b"].mask, inputs["b"].present)
    with torch.enable_grad():
        x_grad, mask_grad, spans_grad = head._sequence(inputs, 3, torch.device("cpu"))
    with torch.no_grad():
        x, mask, spans = head._sequence(inputs, 3, torch.device("cpu"))
        pooled = head.pooled_output(inputs).pooled
    assert x.dtype == x_grad.dtype == torch.float32
    assert torch.equal(x, x_grad) and torch.equal(mask, mask_grad) and spans == spans_grad
    assert torch.isfinite(x).all() and torch.isfinite(pooled).all()
    assert torch.equal(x[:, 0], head.cls.detach().expand(3, -1))
