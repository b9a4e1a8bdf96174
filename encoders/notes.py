"""A simple clinical-notes encoder: a bag of word embeddings per note, one token per note."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens


class NotesBagEncoder(ModalityEncoder):
    """Encode each note as the masked mean of its word embeddings, projected to ``D``.

    Word id 0 is padding (``padding_idx``), 1 the unknown word. Notes are encoded independently, so a
    padded note (``note_mask`` False) or padded word (``token_mask`` False) never influences a real
    token. A note that is real but holds no words becomes the projection of a zero vector.

    Args:
        d_model: width ``D`` of each token.
        spec: ``{"vocab_size": int, "max_words": int}`` (``docs/formats.md`` section 3).
        embed_dim: width of the word embeddings.
        dropout: dropout on the bag-of-words vector.
    """

    modality = "notes"

    def __init__(self, d_model: int, spec: dict[str, Any], embed_dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "vocab_size")
        self.vocab_size = int(spec["vocab_size"])
        if self.vocab_size < 2:
            raise ValueError(f"NotesBagEncoder: vocab_size counts 0 = pad and 1 = unknown, so must be >= 2, got {self.vocab_size}")
        self.embedding = nn.Embedding(self.vocab_size, embed_dim, padding_idx=0)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, d_model), nn.GELU(), nn.LayerNorm(d_model))

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode every note into one token.

        Args:
            inputs: ``token_ids``, ``token_mask``, ``note_times``, ``note_mask`` and ``present``.

        Returns:
            ``N = K`` tokens per patient (one per note), masked by ``note_mask & present``; ``times``
            are the note times in hours.

        Shapes:
            - token_ids: ``(B, K, W)`` long; token_mask: ``(B, K, W)`` bool
            - note_times: ``(B, K)`` float; note_mask: ``(B, K)`` bool
            - output tokens: ``(B, K, D)``, mask and times: ``(B, K)``
        """
        b = self.require(inputs, "token_ids", "token_mask", "note_times", "note_mask")
        present = inputs["present"]
        self.check_shape("token_ids", inputs["token_ids"], (b, None, None))
        k, w = inputs["token_ids"].shape[1:]
        self.check_shape("token_mask", inputs["token_mask"], (b, k, w))
        self.check_shape("note_times", inputs["note_times"], (b, k))
        self.check_shape("note_mask", inputs["note_mask"], (b, k))
        note_mask = inputs["note_mask"].bool() & present[:, None]  # (B, K)
        ids = inputs["token_ids"].long()
        words = inputs["token_mask"].bool() & note_mask[..., None] & (ids != 0)  # (B, K, W)
        self.check_indices("token_ids", ids, words, self.vocab_size)
        ids = torch.where(words, ids, torch.zeros_like(ids))  # padding never indexes the table

        # the mean over each note's words; index 0 (padding) is left out of the sum and the count,
        # and an empty note gives zeros. One fused lookup-and-reduce: the (B, K, W, E) table of
        # word embeddings is never built (a tenth of the time of lookup, mask and sum).
        table = self.embedding.weight  # (V, E)
        if w:
            bag = F.embedding_bag(ids.reshape(b * k, w), table, mode="mean", padding_idx=0).view(b, k, -1)
        else:  # notes without word slots (embedding_bag refuses width 0)
            bag = table.new_zeros(b, k, table.shape[1])  # (B, K, E)
        tokens = self.proj(bag)  # (B, K, D)
        return ModalityTokens.from_tokens(tokens, note_mask, present, times=inputs["note_times"])

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"vocab_size": 50, "max_words": 12}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Up to 3 notes of up to 12 words per patient; the last patient is absent.

        Example:
            >>> x = NotesBagEncoder.example_inputs()
            >>> x["token_ids"].shape
            torch.Size([3, 3, 12])
        """
        g = torch.Generator().manual_seed(seed)
        b, k, w, vocab = batch_size, 3, 12, 50
        n_notes = torch.randint(1, k + 1, (b,), generator=g)
        note_mask = torch.arange(k)[None, :] < n_notes[:, None]  # (B, K)
        n_words = torch.randint(1, w + 1, (b, k), generator=g)
        token_mask = (torch.arange(w)[None, None, :] < n_words[..., None]) & note_mask[..., None]
        token_ids = torch.randint(1, vocab, (b, k, w), generator=g) * token_mask
        note_times = torch.sort(torch.rand(b, k, generator=g) * 48.0, dim=1).values * note_mask
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        token_ids[-1] = torch.randint(0, vocab, (k, w), generator=g)
        token_mask[-1] = torch.rand(k, w, generator=g) < 0.5
        note_times[-1] = torch.rand(k, generator=g) * 1000
        note_mask[-1] = torch.rand(k, generator=g) < 0.5
        return {
            "token_ids": token_ids,
            "token_mask": token_mask,
            "note_times": note_times,
            "note_mask": note_mask,
            "present": present,
        }
