"""A hierarchical transformer over clinical notes: words -> one vector per note -> attention over time."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.note_time_attention import NoteTimeAttention
from clinfuse.encoders.notes import NotesBagEncoder


class NotesTransformerEncoder(ModalityEncoder):
    """Encode each note with a small word-level transformer, then attend across the patient's notes.

    Follows hierarchical transformers for long documents (Pappagari et al., 2019, "Hierarchical
    Transformers for Long Document Classification"), with notes as segments placed in time by a
    Time2Vec embedding. Each real note's tokens (learned word + position embeddings, a learned
    always-valid CLS token in front) go through ``n_layers`` pre-norm transformer layers; the note
    vector is the masked mean over CLS + real tokens (``pooling="mean"``) or the CLS output
    (``pooling="cls"``). Padded notes never enter the word transformer; padded words are masked
    keys. Note vectors are projected to ``D`` and contextualised by :class:`NoteTimeAttention`.
    Works with the ``words`` and the ``bpe`` tokenizer of the notes reader.

    Args:
        d_model: width ``D`` of each output token.
        spec: ``{"vocab_size": int, "max_words": int}`` (``docs/formats.md`` section 3).
        embed_dim: width of the word-level transformer.
        n_layers: word-level transformer layers.
        n_heads: attention heads (word level and across notes).
        time_layers: transformer layers across notes.
        pooling: ``mean`` or ``cls``.
        dropout: dropout in every transformer layer and before the projection.
        n_frequencies: periodic features of the note-time embedding.
    """

    modality = "notes"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        embed_dim: int = 64,
        n_layers: int = 1,
        n_heads: int = 4,
        time_layers: int = 1,
        pooling: Literal["mean", "cls"] = "mean",
        dropout: float = 0.1,
        n_frequencies: int = 16,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "vocab_size", "max_words")
        self.vocab_size, self.max_words = int(spec["vocab_size"]), int(spec["max_words"])
        if self.vocab_size < 2 or self.max_words < 1:
            raise ValueError(
                f"NotesTransformerEncoder: spec needs vocab_size >= 2 (0 = pad, 1 = unknown) and max_words >= 1, "
                f"got {self.vocab_size}, {self.max_words}"
            )
        if pooling not in ("mean", "cls"):
            raise ValueError(f"NotesTransformerEncoder: pooling must be 'mean' or 'cls', got {pooling!r}")
        if n_layers < 1:
            raise ValueError(f"NotesTransformerEncoder: n_layers must be >= 1, got {n_layers}")
        self.pooling = pooling
        self.embedding = nn.Embedding(self.vocab_size, embed_dim, padding_idx=0)
        # positions on the words' scale (nn.Embedding draws N(0, 1)). At N(0, 0.02) they were 2 % of a
        # token's input: reversing a note's words moved its vector 0.3 % as far as changing its
        # words did (8 % now), and on a word-order cohort (`clinfuse synth --notes-signal context`)
        # some training seeds never learned the order (docs/benchmarks/encoders.md).
        self.position = nn.Parameter(torch.randn(self.max_words, embed_dim))
        self.cls = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            embed_dim, n_heads, dim_feedforward=2 * embed_dim, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.words = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.word_norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, d_model))
        self.across = NoteTimeAttention(d_model, n_heads, time_layers, dropout, n_frequencies)

    def encode_notes(self, ids: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """One vector per real note.

        Args:
            ids: token ids, 0 wherever ``words`` is False.
            words: True = a real token.

        Shapes:
            - ids, words: ``(R, W)`` for ``R`` real notes
            - output: ``(R, E)``
        """
        r, w = ids.shape
        x = self.embedding(ids) + self.position[:w]  # (R, W, E)
        seq = torch.cat([self.cls.expand(r, 1, -1), x], dim=1)  # (R, 1 + W, E)
        valid = torch.cat([torch.ones(r, 1, dtype=torch.bool, device=ids.device), words], dim=1)  # (R, 1 + W)
        h = self.words(seq, src_key_padding_mask=~valid)  # torch wants True = ignore: invert here
        if self.pooling == "cls":
            pooled = h[:, 0]  # (R, E)
        else:
            total = torch.where(valid[..., None], h, torch.zeros_like(h)).sum(1)  # (R, E)
            pooled = total / valid.sum(1, keepdim=True).to(h.dtype)
        return self.word_norm(pooled)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode every note into one token, contextualised by the patient's other notes.

        Args:
            inputs: ``token_ids``, ``token_mask``, ``note_times``, ``note_mask`` and ``present``.

        Returns:
            ``N = K`` tokens per patient (one per note), masked by ``note_mask & present``; ``times``
            are the note times in hours.

        Shapes:
            - token_ids: ``(B, K, W)`` long; token_mask: ``(B, K, W)`` bool, ``W <= max_words``
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
        if w > self.max_words:
            raise ValueError(
                f"NotesTransformerEncoder: notes input 'token_ids' has {w} tokens per note, more than the "
                f"spec's max_words={self.max_words} (shape {tuple(inputs['token_ids'].shape)})"
            )
        note_mask = inputs["note_mask"].bool() & present[:, None]  # (B, K)
        ids = inputs["token_ids"].long()
        words = inputs["token_mask"].bool() & note_mask[..., None] & (ids != 0)  # (B, K, W)
        self.check_indices("token_ids", ids, words, self.vocab_size)
        ids = torch.where(words, ids, torch.zeros_like(ids))  # padding never indexes the table

        notes = torch.zeros(b, k, self.embedding.embedding_dim, device=ids.device, dtype=self.cls.dtype)
        if bool(note_mask.any()):  # only real notes enter the word transformer
            encoded = self.encode_notes(ids[note_mask], words[note_mask])  # (K_real, E); bfloat16 under autocast
            notes = notes.index_put((note_mask,), encoded.to(notes.dtype))  # (B, K, E)
        tokens = self.across(self.proj(notes), inputs["note_times"], note_mask)  # (B, K, D)
        return ModalityTokens.from_tokens(tokens, note_mask, present, times=inputs["note_times"])

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"vocab_size": 50, "max_words": 12}

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"embed_dim": 16, "n_heads": 2}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Up to 3 notes of up to 12 tokens per patient (the bag encoder's batch); the last is absent.

        Example:
            >>> x = NotesTransformerEncoder.example_inputs()
            >>> x["token_ids"].shape
            torch.Size([3, 3, 12])
        """
        return NotesBagEncoder.example_inputs(batch_size, seed)
