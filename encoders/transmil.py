"""TransMIL-style transformer over a whole-slide-image bag, linear in bag size via learned queries."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.chunked_attention import chunked_attention_pool
from clinfuse.encoders.patch_sampling import sample_valid_patches, unsample
from clinfuse.encoders.wsi import WSIMeanEncoder


class TransMILEncoder(ModalityEncoder):
    """``K`` learned queries read the bag by cross-attention, then attend to each other.

    Follows TransMIL (Shao et al., "TransMIL: Transformer based Correlated Multiple Instance
    Learning for Whole Slide Image Classification", NeurIPS 2021), made linear in the bag size the
    way the Set Transformer's PMA (Lee et al., ICML 2019) and the Perceiver (Jaegle et al., ICML 2021)
    are: instead of self-attention among all ``P`` patches, ``K`` learned latent queries attend over
    the bag (multi-head cross-attention, pre-norm, residual + feed-forward), then ``n_layers``
    pre-norm transformer layers let the ``K`` latents exchange information; each latent is one
    output token.

    The cross-attention softmax over patches runs in chunks of ``chunk_size`` patches with an online
    softmax (:func:`~clinfuse.encoders.chunked_attention.chunked_attention_pool`), projecting each
    chunk only when it is visited: time and memory are linear in ``P`` (a 100,000-patch bag encodes
    on a CPU); chunking does not change the result beyond float rounding.

    TransMIL's PPEG (a convolution over patches laid out on a square grid) is left out: the batch
    carries no patch coordinates, and the synthetic/CLAM bags are unordered sets.

    ``forward(inputs, return_attention=True)`` also returns the ``(B, H, K, P)`` cross-attention
    weights (head, query, patch) for interpretability.

    Args:
        d_model: width ``D`` of the patch projection, the latents and the output tokens.
        spec: ``{"feature_dim": int}`` (``docs/formats.md`` section 3).
        n_queries: ``K``, learned latent queries = output tokens.
        n_heads: attention heads (must divide ``d_model``).
        n_layers: self-attention layers among the ``K`` latents (0 allowed).
        dropout: dropout after the patch projection, in the residual branches and the latent layers.
        chunk_size: patches per chunk of the online softmax.
        sample_patches: in training mode, keep only this many patches per bag, drawn uniformly
            without replacement among its valid patches (None: use all); eval always uses all.
    """

    modality = "wsi"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_queries: int = 4,
        n_heads: int = 4,
        n_layers: int = 1,
        dropout: float = 0.1,
        chunk_size: int = 4096,
        sample_patches: int | None = None,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "feature_dim")
        self.feature_dim = int(spec["feature_dim"])
        for name, value in [("feature_dim", self.feature_dim), ("n_queries", n_queries),
                            ("n_heads", n_heads), ("chunk_size", chunk_size)]:
            if value < 1:
                raise ValueError(f"TransMILEncoder: {name} must be >= 1, got {value}")
        if d_model % n_heads:
            raise ValueError(f"TransMILEncoder: n_heads={n_heads} must divide d_model={d_model}")
        if n_layers < 0:
            raise ValueError(f"TransMILEncoder: n_layers must be >= 0, got {n_layers}")
        if sample_patches is not None and sample_patches < 1:
            raise ValueError(f"TransMILEncoder: sample_patches must be >= 1 or None, got {sample_patches}")
        self.n_queries, self.n_heads = n_queries, n_heads
        self.chunk_size = chunk_size
        self.sample_patches = sample_patches
        self.patch_proj = nn.Sequential(nn.Linear(self.feature_dim, d_model), nn.GELU(), nn.Dropout(dropout))
        self.queries = nn.Parameter(torch.randn(n_queries, d_model))
        self.query_norm = nn.LayerNorm(d_model)
        self.patch_norm = nn.LayerNorm(d_model)
        self.to_q = nn.Linear(d_model, d_model)
        self.to_kv = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)
        self.ffn = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(2 * d_model, d_model),
        )
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 2 * d_model, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.latent = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False) if n_layers else None
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, inputs: dict[str, torch.Tensor], return_attention: bool = False
    ) -> ModalityTokens | tuple[ModalityTokens, torch.Tensor]:
        """Summarise each patient's bag of patches into ``K`` latent tokens.

        Args:
            inputs: ``features``, ``mask`` and ``present``.
            return_attention: also return the cross-attention weights.

        Returns:
            ``K`` tokens per patient, real when the patient has at least one valid patch (absent
            patients and empty bags: exactly zero, masked); ``times`` is None. With
            ``return_attention``: ``(tokens, attention)``, attention ``(B, H, K, P)`` over the input
            patches (patches left out by ``sample_patches`` get weight zero).

        Shapes:
            - features: ``(B, P, F)`` float; mask: ``(B, P)`` bool; present: ``(B,)`` bool
            - output tokens: ``(B, K, D)``, mask: ``(B, K)``; attention: ``(B, H, K, P)``
        """
        b = self.require(inputs, "features", "mask")
        feats = inputs["features"]
        self.check_shape("features", feats, (b, None, self.feature_dim))
        self.check_shape("mask", inputs["mask"], (b, feats.shape[1]))
        valid = inputs["mask"].bool() & inputs["present"][:, None]  # (B, P)
        index = None
        if self.training and self.sample_patches is not None:
            feats, valid, index = sample_valid_patches(feats, valid, self.sample_patches)  # (B, S, F)
        h_, d = self.n_heads, self.d_model // self.n_heads
        q = self.to_q(self.query_norm(self.queries))  # (K, D)
        q = q.view(1, self.n_queries, h_, d).transpose(1, 2) / math.sqrt(d)  # (1, H, K, D/H)

        def chunk(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
            # padding is replaced (not multiplied by 0) before any arithmetic: it may hold NaN
            x = torch.where(valid[:, start:end, None], feats[:, start:end], 0.0)  # (B, c, F)
            kv = self.to_kv(self.patch_norm(self.patch_proj(x)))  # (B, c, 2D)
            k, v = kv.view(b, end - start, 2, h_, d).permute(2, 0, 3, 1, 4)  # each (B, H, c, D/H)
            return q @ k.transpose(-1, -2), v  # (B, H, K, c), (B, H, c, D/H)

        pooled = chunked_attention_pool(chunk, valid, self.chunk_size, return_weights=return_attention)
        read = pooled.pooled.transpose(1, 2).reshape(b, self.n_queries, self.d_model)  # (B, K, D)
        z = self.queries + self.drop(self.out_proj(read))  # (B, K, D)
        z = z + self.drop(self.ffn(z))  # (B, K, D)
        if self.latent is not None:
            z = self.latent(z)  # (B, K, D)
        has_wsi = valid.any(1)  # (B,)
        out = ModalityTokens.from_tokens(self.norm(z), has_wsi[:, None].expand(b, self.n_queries), has_wsi)
        if not return_attention:
            return out
        return out, unsample(pooled.weights, index, inputs["features"].shape[1])  # (B, H, K, P)

    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return {"feature_dim": 32}

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"n_queries": 3, "n_heads": 2, "n_layers": 1, "chunk_size": 7, "sample_patches": 12}

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """Bags of up to 20 patches with 32 features; the last patient is absent.

        Example:
            >>> x = TransMILEncoder.example_inputs()
            >>> x["features"].shape, x["mask"].shape
            (torch.Size([3, 20, 32]), torch.Size([3, 20]))
        """
        return WSIMeanEncoder.example_inputs(batch_size, seed)  # the same wsi batch format
