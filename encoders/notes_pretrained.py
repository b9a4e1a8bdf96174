"""Notes encoder over frozen pretrained note embeddings (computed once by the notes reader)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.note_time_attention import NoteTimeAttention


class NotesPretrainedEncoder(ModalityEncoder):
    """Project frozen per-note sentence embeddings to ``D`` and attend across the patient's notes.

    Follows the frozen-encoder + trainable-head recipe of Sentence-BERT features (Reimers &
    Gurevych, 2019) with notes placed in time by Time2Vec. The notes reader's ``pretrained``
    option embeds every note once with a local HuggingFace model (``datasets/note_embeddings.py``),
    so only this small head trains: ``LayerNorm(E) -> Linear(E, D) -> GELU -> Dropout ->
    Linear(D, D)`` per note, then :class:`NoteTimeAttention` across notes. Padded notes are filled
    with zeros before any arithmetic.

    Args:
        d_model: width ``D`` of each output token.
        spec: ``{"embedding_dim": E}`` (``docs/formats.md`` section 3, notes with ``pretrained``).
        n_heads: attention heads across notes.
        time_layers: transformer layers across notes.
        dropout: dropout in the projection and the transformer layers.
        n_frequencies: periodic features of the note-time embedding.
    """

    modality = "notes"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_heads: int = 4,
        time_layers: int = 1,
        dropout: float = 0.1,
        n_frequencies: int = 16,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "embedding_dim")
        self.embedding_dim = int(spec["embedding_dim"])
        if self.embedding_dim < 1:
            raise ValueError(f"NotesPretrainedEncoder: spec embedding_dim must be >= 1, got {self.embedding_dim}")
        self.proj = nn.Sequential(
            nn.LayerNorm(self.embedding_dim),
            nn.Linear(self.embedding_dim, d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_model, d_model),
        )
        self.across = NoteTimeAttention(d_model, n_heads, time_layers, dropout, n_frequencies)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode every note embedding into one token.

        Args:
            inputs: ``embeddings``, ``note_times``, ``note_mask`` and ``present``.

        Returns:
            ``N = K`` tokens per patient (one per note), masked by ``note_mask & present``; ``times``
            are the note times in hours.

        Shapes:
            - embeddings: ``(B, K, E)`` float; note_times: ``(B, K)`` float; note_mask: ``(B, K)`` bool
            - output tokens: ``(B, K, D)``, mask and times: ``(B, K)``
        """
        b = self.require(inputs, "embeddings", "note_times", "note_mask")
        present = inputs["present"]
        self.check_shape("embeddings", inputs["embeddings"], (b, None, self.embedding_dim))
        k = inputs["embeddings"].shape[1]
        self.check_shape("note_times", inputs["note_times"], (b, k))
        self.check_shape("note_mask", inputs["note_mask"], (b, k))
        note_mask = inputs["note_mask"].bool() & present[:, None]  # (B, K)
        emb = inputs["embeddings"].to(self.proj[1].weight.dtype)
        emb = torch.where(note_mask[..., None], emb, torch.zeros_like(emb))  # (B, K, E); padding may be NaN
        tokens = self.across(self.proj(emb), inputs["note_times"], note_mask)  # (B, K, D)
        return ModalityTokens.from_tokens(tokens, note_mask, present, times=inputs["note_times"])

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"embedding_dim": 24}

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"n_heads": 2}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Up to 3 notes of 24-dim frozen embeddings per patient; the last patient is absent.

        Example:
            >>> x = NotesPretrainedEncoder.example_inputs()
            >>> x["embeddings"].shape
            torch.Size([3, 3, 24])
        """
        g = torch.Generator().manual_seed(seed)
        b, k, e = batch_size, 3, 24
        n_notes = torch.randint(1, k + 1, (b,), generator=g)
        note_mask = torch.arange(k)[None, :] < n_notes[:, None]  # (B, K)
        embeddings = torch.randn(b, k, e, generator=g) * note_mask[..., None]  # (B, K, E)
        note_times = torch.sort(torch.rand(b, k, generator=g) * 48.0, dim=1).values * note_mask
        present = torch.ones(b, dtype=torch.bool)
        present[-1] = False
        # the absent patient's row is padding: fill it with garbage an encoder must ignore
        embeddings[-1] = torch.randn(k, e, generator=g) * 100
        note_times[-1] = torch.rand(k, generator=g) * 1000
        note_mask[-1] = torch.rand(k, generator=g) < 0.5
        return {"embeddings": embeddings, "note_times": note_times, "note_mask": note_mask, "present": present}
