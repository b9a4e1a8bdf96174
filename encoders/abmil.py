"""Gated-attention multiple-instance learning over a bag of whole-slide-image patch features."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.chunked_attention import chunked_attention_pool
from clinfuse.encoders.patch_sampling import sample_valid_patches, unsample
from clinfuse.encoders.wsi import WSIMeanEncoder


class ABMILEncoder(ModalityEncoder):
    """Multi-branch gated-attention MIL pooling of patch features into ``K`` tokens.

    Follows Ilse, Tomczak & Welling, "Attention-based Deep Multiple Instance Learning" (ICML 2018),
    with ``K`` attention branches as in CLAM's multi-branch variant (Lu et al., Nat. Biomed. Eng. 2021).
    Every patch ``x`` is projected to ``h = Dropout(GELU(W x))`` (width ``D``); branch ``k`` scores it
    with the gated attention ``a_k = w_k^T (tanh(V h) * sigmoid(U h))`` (``V, U`` shared, one
    ``w_k`` per branch); token ``k`` is ``LayerNorm(sum_p softmax_p(a_k) h_p + e_k)`` with a learned
    branch embedding ``e_k`` that tells the fusion head which branch a token comes from.

    The softmax over patches runs in chunks of ``chunk_size`` patches with an online softmax
    (:func:`~clinfuse.encoders.chunked_attention.chunked_attention_pool`), and each chunk is projected
    only when it is visited: time and memory are linear in the bag size, so a 100,000-patch bag
    encodes on a CPU. Chunking does not change the result (beyond float rounding).

    Interpretability: ``forward(inputs, return_attention=True)`` also returns the ``(B, K, P)``
    attention weights of every branch over the patches of ``inputs`` (zero at padding; each row of a
    patient with patches sums to one).

    Args:
        d_model: width ``D`` of the patch projection and of the output tokens.
        spec: ``{"feature_dim": int}`` (``docs/formats.md`` section 3).
        n_tokens: ``K``, attention branches = output tokens.
        attention_dim: width of the gated-attention hidden layer (``V`` and ``U``).
        dropout: dropout after the patch projection.
        chunk_size: patches per chunk of the online softmax.
        sample_patches: in training mode, keep only this many patches per bag, drawn uniformly
            without replacement among its valid patches (None: use all); eval always uses all.
    """

    modality = "wsi"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_tokens: int = 4,
        attention_dim: int = 64,
        dropout: float = 0.1,
        chunk_size: int = 4096,
        sample_patches: int | None = None,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "feature_dim")
        self.feature_dim = int(spec["feature_dim"])
        for name, value in [("feature_dim", self.feature_dim), ("n_tokens", n_tokens),
                            ("attention_dim", attention_dim), ("chunk_size", chunk_size)]:
            if value < 1:
                raise ValueError(f"ABMILEncoder: {name} must be >= 1, got {value}")
        if sample_patches is not None and sample_patches < 1:
            raise ValueError(f"ABMILEncoder: sample_patches must be >= 1 or None, got {sample_patches}")
        self.n_tokens = n_tokens
        self.chunk_size = chunk_size
        self.sample_patches = sample_patches
        self.patch_proj = nn.Sequential(nn.Linear(self.feature_dim, d_model), nn.GELU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(d_model, attention_dim)  # tanh branch
        self.attn_u = nn.Linear(d_model, attention_dim)  # sigmoid gate
        self.attn_w = nn.Linear(attention_dim, n_tokens)  # one scoring vector per branch
        self.branch_embed = nn.Parameter(torch.randn(n_tokens, d_model) * 0.02)
        self.norm = nn.LayerNorm(d_model)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Gated attention logits of projected patches.

        Shapes:
            h: ``(B, P, D)`` -> ``(B, K, P)``.
        """
        gated = torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h))  # (B, P, attention_dim)
        return self.attn_w(gated).transpose(1, 2)  # (B, K, P)

    def forward(
        self, inputs: dict[str, torch.Tensor], return_attention: bool = False
    ) -> ModalityTokens | tuple[ModalityTokens, torch.Tensor]:
        """Pool each patient's bag of patches into ``K`` tokens.

        Args:
            inputs: ``features``, ``mask`` and ``present``.
            return_attention: also return the attention weights.

        Returns:
            ``K`` tokens per patient, real when the patient has at least one valid patch (absent
            patients and empty bags: exactly zero, masked); ``times`` is None. With
            ``return_attention``: ``(tokens, attention)``, attention ``(B, K, P)`` over the input
            patches (patches left out by ``sample_patches`` get weight zero).

        Shapes:
            - features: ``(B, P, F)`` float; mask: ``(B, P)`` bool; present: ``(B,)`` bool
            - output tokens: ``(B, K, D)``, mask: ``(B, K)``; attention: ``(B, K, P)``
        """
        b = self.require(inputs, "features", "mask")
        feats = inputs["features"]
        self.check_shape("features", feats, (b, None, self.feature_dim))
        self.check_shape("mask", inputs["mask"], (b, feats.shape[1]))
        valid = inputs["mask"].bool() & inputs["present"][:, None]  # (B, P)
        index = None
        if self.training and self.sample_patches is not None:
            feats, valid, index = sample_valid_patches(feats, valid, self.sample_patches)  # (B, S, F)

        def chunk(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
            # padding is replaced (not multiplied by 0) before any arithmetic: it may hold NaN
            x = torch.where(valid[:, start:end, None], feats[:, start:end], 0.0)  # (B, c, F)
            h = self.patch_proj(x)  # (B, c, D)
            return self.scores(h)[:, None], h[:, None]  # (B, 1, K, c), (B, 1, c, D)

        pooled = chunked_attention_pool(chunk, valid, self.chunk_size, return_weights=return_attention)
        z = pooled.pooled[:, 0]  # (B, K, D)
        tokens = self.norm(z + self.branch_embed)  # (B, K, D)
        has_wsi = valid.any(1)  # (B,)
        out = ModalityTokens.from_tokens(tokens, has_wsi[:, None].expand(b, self.n_tokens), has_wsi)
        if not return_attention:
            return out
        return out, unsample(pooled.weights[:, 0], index, inputs["features"].shape[1])  # (B, K, P)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"feature_dim": 32}

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"n_tokens": 3, "attention_dim": 8, "chunk_size": 7, "sample_patches": 12}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Bags of up to 20 patches with 32 features; the last patient is absent.

        Example:
            >>> x = ABMILEncoder.example_inputs()
            >>> x["features"].shape, x["mask"].shape
            (torch.Size([3, 20, 32]), torch.Size([3, 20]))
        """
        return WSIMeanEncoder.example_inputs(batch_size, seed)  # the same wsi batch format

