"""MaskedMeanFusion against a hand-computed reference."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.masked_mean import MaskedMeanFusion, masked_token_mean


def test_masked_token_mean_by_hand():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    t = ModalityTokens(tokens, mask, mask.any(1))  # padding 100s left in on purpose
    assert torch.equal(masked_token_mean(t), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))


def test_pooled_is_mlp_of_the_mean_over_present_modalities():
    torch.manual_seed(0)
    head = MaskedMeanFusion(2, ["a", "b", "c"]).eval()
    a = ModalityTokens.from_tokens(
        torch.tensor([[[1.0, 1.0], [3.0, 5.0]], [[2.0, 2.0], [9.0, 9.0]], [[0.0, 0.0], [0.0, 0.0]]]),
        torch.tensor([[True, True], [True, False], [False, False]]),
    )
    b = ModalityTokens.from_tokens(
        torch.tensor([[[4.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]]]), torch.tensor([[True], [False], [False]])
    )
    out = head({"b": b, "a": a})  # "c" omitted: absent for everybody
    # by hand: patient 0 has a (mean (2, 3)) and b ((4, 0)) -> (3, 1.5); patient 1 has a -> (2, 2)
    expected = head.mlp(torch.tensor([[3.0, 1.5], [2.0, 2.0]]))
    torch.testing.assert_close(out.pooled[:2], expected)
    torch.testing.assert_close(out.pooled[2], head.empty.detach())
    torch.testing.assert_close(out.per_modality["b"][0], head.mlp(torch.tensor([4.0, 0.0])))
    assert (out.per_modality["b"][1:] == 0).all() and (out.per_modality["c"] == 0).all()


def test_fusion_heads_refuse_misuse_clearly():
    import numpy as np

    from clinfuse.fusion.transformer import TransformerFusion

    with pytest.raises(TypeError, match="modalities must be a list of modality names, got 'ab'"):
        MaskedMeanFusion(16, "ab")
    with pytest.raises(ValueError, match="d_model must be a positive integer, got 2.5"):
        MaskedMeanFusion(2.5, ["a"])
    assert MaskedMeanFusion(np.int64(16), ["a"]).d_model == 16
    with pytest.raises(ValueError, match="n_layers and n_heads must be >= 1"):
        TransformerFusion(16, ["a"], n_layers=0)
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\)"):
        TransformerFusion(16, ["a"], attention_dropout=2.0)
    head = MaskedMeanFusion(16, ["a"])
    with pytest.raises(TypeError, match=r"inputs \['a'\] must be ModalityTokens .* got Tensor"):
        head({"a": torch.zeros(2, 3, 16)})
