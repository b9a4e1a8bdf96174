"""NotesBagEncoder: each note's token is the projection of the mean of its real words' embeddings."""

from __future__ import annotations

import pytest
import torch

from clinfuse.encoders.notes import NotesBagEncoder


def _inputs(token_ids: torch.Tensor, token_mask: torch.Tensor, note_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    b, k = note_mask.shape
    return {"token_ids": token_ids, "token_mask": token_mask, "note_mask": note_mask,
            "note_times": torch.arange(b * k, dtype=torch.float32).view(b, k), "present": note_mask.any(1)}


@pytest.mark.parametrize("training", [False, True])
def test_each_note_is_the_mean_of_its_real_words_embeddings(training):
    torch.manual_seed(0)
    enc = NotesBagEncoder(8, {"vocab_size": 30}, embed_dim=6, dropout=0.0).train(training)
    # patient 0: a note with padding in the middle (id 0 inside the mask) and words beyond the mask;
    # patient 1: one real note and one note with no real word; patient 2: absent
    ids = torch.tensor([
        [[5, 0, 7, 9, 11], [3, 3, 4, 0, 0]],
        [[2, 8, 1, 0, 0], [6, 6, 6, 6, 6]],
        [[4, 4, 4, 4, 4], [9, 9, 9, 9, 9]],
    ])
    token_mask = torch.tensor([
        [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]],
        [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]],
        [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]],
    ], dtype=torch.bool)
    note_mask = torch.tensor([[1, 1], [1, 1], [0, 0]], dtype=torch.bool)
    out = enc(_inputs(ids, token_mask, note_mask))
    table = enc.embedding.weight.detach()
    real_words = {(0, 0): [5, 7, 9], (0, 1): [3, 3, 4], (1, 0): [2, 8, 1]}
    with torch.no_grad():
        for (i, j), words in real_words.items():
            ref = enc.proj(table[words].mean(0))  # hand-computed: this note alone
            torch.testing.assert_close(out.tokens[i, j], ref, rtol=1e-6, atol=1e-6)
        # a note without a real word is the projection of a zero mean (and stays masked by note_mask)
        torch.testing.assert_close(out.tokens[1, 1], enc.proj(torch.zeros(6)), rtol=1e-6, atol=1e-6)
    assert out.mask.tolist() == [[True, True], [True, True], [False, False]]


def test_every_embedding_row_used_gets_a_gradient_and_padding_none():
    torch.manual_seed(0)
    enc = NotesBagEncoder(8, {"vocab_size": 12}, embed_dim=4, dropout=0.0)
    ids = torch.tensor([[[3, 5, 0]], [[7, 0, 0]]])
    mask = torch.tensor([[[1, 1, 1]], [[1, 1, 0]]], dtype=torch.bool)
    tokens = enc(_inputs(ids, mask, torch.ones(2, 1, dtype=torch.bool))).tokens
    (tokens * torch.randn(tokens.shape)).sum().backward()  # (a plain sum of LayerNorm outputs is constant)
    grad_rows = enc.embedding.weight.grad.abs().sum(1) > 0
    assert grad_rows.nonzero().flatten().tolist() == [3, 5, 7]


def test_notes_without_word_slots_give_zero_means():
    enc = NotesBagEncoder(8, {"vocab_size": 12}, embed_dim=4).eval()
    out = enc(_inputs(torch.zeros(2, 3, 0, dtype=torch.long), torch.zeros(2, 3, 0, dtype=torch.bool),
                      torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)))
    with torch.no_grad():
        torch.testing.assert_close(out.tokens[0, 0], enc.proj(torch.zeros(4)))
    assert out.tokens.shape == (2, 3, 8) and torch.isfinite(out.tokens).all()
