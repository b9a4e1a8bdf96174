"""SymileFusion: representations written out by hand, missing embeddings, the pooled MLP."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.symile import SymileFusion

D = 4


def tokens(rows: list[list[list[float]]], mask: list[list[bool]]) -> ModalityTokens:
    return ModalityTokens.from_tokens(torch.tensor(rows), torch.tensor(mask))


@pytest.fixture
def head() -> SymileFusion:
    torch.manual_seed(0)
    return SymileFusion(D, ["a", "b", "c"]).eval()


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def test_representations_by_hand(head):
    # patient 0: two tokens of a, padding in between; patient 1: no a at all
    a = tokens([[[1.0, 2, 0, 0], [9, 9, 9, 9], [3, 0, 0, 4]], [[5.0, 5, 5, 5]] * 3],
               [[True, False, True], [False, False, False]])
    b = tokens([[[0.0, 1, 0, 0]], [[1.0, 0, 0, 0]]], [[True], [True]])
    reps, present = head.represent({"b": b, "a": a})  # c omitted: absent for everyone
    mean_a0 = torch.tensor([2.0, 1, 0, 2])  # mean of the two real tokens
    proj = head.projections["a"]
    torch.testing.assert_close(reps["a"][0], unit(proj.weight @ mean_a0 + proj.bias))
    torch.testing.assert_close(reps["a"][1], unit(head.missing["a"].detach()))
    for i in range(2):
        torch.testing.assert_close(reps["c"][i], unit(head.missing["c"].detach()))
        pb = head.projections["b"]
        torch.testing.assert_close(reps["b"][i], unit(pb.weight @ b.tokens[i, 0] + pb.bias))
    assert present["a"].tolist() == [True, False] and present["c"].tolist() == [False, False]
    out = head({"a": a, "b": b})
    expected = head.mlp(torch.cat([reps["a"], reps["b"], reps["c"]], dim=1))
    torch.testing.assert_close(out.pooled, expected)
    assert (out.per_modality["a"][1] == 0).all() and (out.per_modality["c"] == 0).all()
    torch.testing.assert_close(out.per_modality["a"][0], reps["a"][0])


def test_missing_embedding_matters_only_for_patients_without_the_modality(head):
    a = tokens([[[1.0, 2, 3, 4]], [[0.0, 0, 0, 0]]], [[True], [False]])
    before = head({"a": a}).pooled
    with torch.no_grad():
        head.missing["a"].add_(1.0)
    after = head({"a": a}).pooled
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1])


def test_rejects_unknown_modality(head):
    with pytest.raises(ValueError, match="unknown modalities"):
        head.represent({"z": tokens([[[1.0, 0, 0, 0]]], [[True]])})
