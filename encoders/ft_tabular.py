"""FT-Transformer tabular encoder: one token per feature plus a CLS token, mixed by a small transformer."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens
from clinfuse.encoders.tabular import TabularMLPEncoder


class FTTransformerEncoder(ModalityEncoder):
    """Feature tokenizer + transformer over one row of numeric and categorical features.

    Follows the FT-Transformer of Gorishniy et al., "Revisiting Deep Learning Models for Tabular
    Data" (NeurIPS 2021); the ``periodic`` numeric embedding is their PLR embedding from "On
    Embeddings for Numerical Features in Tabular Deep Learning" (NeurIPS 2022).

    Every feature becomes one ``D``-wide token:

    - numeric ``linear``: ``x_f * W_f + b_f``;
    - numeric ``periodic``: ``ReLU(Linear_f([cos(2 pi c_f x_f), sin(2 pi c_f x_f)]))`` with ``K``
      learned frequencies ``c_f`` per feature (initialised from ``N(0, frequency_scale^2)``);
    - a numeric value with ``numeric_observed=False`` becomes a learned per-feature missing
      embedding (as in TIP), never the embedding of 0;
    - categorical: a per-feature embedding table (index 0 = missing, 1 = unseen level, 2.. = levels)
      plus a per-feature bias.

    A learned CLS token is prepended and the ``1 + F`` tokens pass through a pre-norm transformer
    and a final LayerNorm. With ``mask_missing_keys`` the missing features (numeric unobserved,
    categorical index 0) are removed from the attention keys and their output tokens are masked;
    CLS is always a valid key, so no query is ever left without keys.

    Deliberate departures from the paper's default model (and rtdl's): the first block keeps its
    first LayerNorm (the paper drops it), the feed-forward block is GELU with width ``2 D`` (the
    paper: ReGLU, about ``4/3 D``), and there is no prediction head (an encoder returns tokens; the
    fusion head and task head come after).

    Args:
        d_model: width ``D`` of every token; must be divisible by ``n_heads``.
        spec: ``{"numeric_features": [...], "categorical_features": [...],
            "categorical_cardinalities": [...]}`` (``docs/formats.md`` section 3).
        n_layers: transformer layers.
        n_heads: attention heads.
        dropout: dropout in attention, feed-forward and residual branches.
        ffn_factor: feed-forward width as a multiple of ``d_model``.
        numeric_embedding: ``"linear"`` or ``"periodic"`` (PLR).
        n_frequencies: frequencies ``K`` per numeric feature (periodic only).
        frequency_scale: std of the initial frequencies (periodic only; the paper tunes it).
        mask_missing_keys: exclude missing features from the attention keys and the output mask.
    """

    modality = "tabular"

    def __init__(
        self,
        d_model: int,
        spec: dict[str, Any],
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        ffn_factor: float = 2.0,
        numeric_embedding: Literal["linear", "periodic"] = "linear",
        n_frequencies: int = 16,
        frequency_scale: float = 0.1,
        mask_missing_keys: bool = False,
    ) -> None:
        super().__init__(d_model)
        self.require_spec(spec, "numeric_features", "categorical_features", "categorical_cardinalities")
        name = type(self).__name__
        if numeric_embedding not in ("linear", "periodic"):
            raise ValueError(f"{name}: numeric_embedding must be 'linear' or 'periodic', got {numeric_embedding!r}")
        if d_model % n_heads:
            raise ValueError(f"{name}: d_model={d_model} is not divisible by n_heads={n_heads}")
        if n_layers < 1 or n_frequencies < 1:
            raise ValueError(f"{name}: n_layers and n_frequencies must be >= 1, got {n_layers}, {n_frequencies}")
        cards = [int(c) for c in spec["categorical_cardinalities"]]
        self.numeric_features = list(spec["numeric_features"])
        self.categorical_features = list(spec["categorical_features"])
        if len(cards) != len(self.categorical_features):
            raise ValueError(
                f"{name}: spec has {len(self.categorical_features)} categorical_features "
                f"but {len(cards)} categorical_cardinalities"
            )
        if any(c < 2 for c in cards):
            raise ValueError(
                f"{name}: every categorical cardinality counts 0 = missing and 1 = unseen, so must be "
                f">= 2; got {dict(zip(self.categorical_features, cards))}"
            )
        if not self.numeric_features and not cards:
            raise ValueError(f"{name}: the spec lists no numeric and no categorical features")
        self.cardinalities = cards
        self.numeric_embedding = numeric_embedding
        self.mask_missing_keys = mask_missing_keys
        f_num, d = len(self.numeric_features), d_model
        bound = 1.0 / math.sqrt(d)  # the rtdl tokenizer's uniform(-1/sqrt(D), 1/sqrt(D)) init

        def uniform(*shape: int, scale: float = bound) -> nn.Parameter:
            return nn.Parameter(torch.empty(*shape).uniform_(-scale, scale))

        self.cls = uniform(d)
        if f_num:
            self.missing_embedding = uniform(f_num, d)  # (F_num, D)
            self.numeric_bias = uniform(f_num, d)  # (F_num, D)
            if numeric_embedding == "linear":
                self.numeric_weight = uniform(f_num, d)  # (F_num, D)
            else:
                # per-feature frequencies and per-feature linear map (the full PLR, not the "lite" one)
                self.frequencies = nn.Parameter(torch.randn(f_num, n_frequencies) * frequency_scale)
                self.periodic_weight = uniform(f_num, 2 * n_frequencies, d, scale=1 / math.sqrt(2 * n_frequencies))
        if cards:
            # one table for all features; feature f owns rows offsets[f] .. offsets[f] + cards[f] - 1
            offsets = torch.tensor([0, *cards[:-1]], dtype=torch.long).cumsum(0)
            self.register_buffer("offsets", offsets, persistent=False)
            self.category_embedding = nn.Embedding(sum(cards), d)
            nn.init.uniform_(self.category_embedding.weight, -bound, bound)
            self.category_bias = uniform(len(cards), d)  # (F_cat, D)
        layer = nn.TransformerEncoderLayer(
            d,
            n_heads,
            dim_feedforward=max(1, int(round(ffn_factor * d))),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # nested tensors do not apply to pre-norm layers; disabling them avoids torch's warning
        self.transformer = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )

    # ------------------------------------------------------------------ tokenizer
    def tokenize(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the inputs and embed every feature (no CLS, no transformer).

        Args:
            inputs: ``numeric``, ``numeric_observed``, ``categorical`` and ``present``.

        Returns:
            ``(tokens, observed)``: feature tokens, numeric features first, and which features are
            observed (numeric_observed, categorical != 0; all False for absent patients).

        Shapes:
            - numeric: ``(B, F_num)`` float, numeric_observed: ``(B, F_num)`` bool
            - categorical: ``(B, F_cat)`` long, present: ``(B,)`` bool
            - tokens: ``(B, F_num + F_cat, D)``, observed: ``(B, F_num + F_cat)`` bool
        """
        b = self.require(inputs, "numeric", "numeric_observed", "categorical")
        present = inputs["present"]
        f_num, f_cat = len(self.numeric_features), len(self.cardinalities)
        self.check_shape("numeric", inputs["numeric"], (b, f_num))
        self.check_shape("numeric_observed", inputs["numeric_observed"], (b, f_num))
        self.check_shape("categorical", inputs["categorical"], (b, f_cat))
        tokens, observed = [], []
        if f_num:
            seen = inputs["numeric_observed"].bool() & present[:, None]  # (B, F_num)
            # replace unread values before any arithmetic (NaN * 0 would still be NaN)
            x = torch.where(seen, inputs["numeric"], torch.zeros_like(inputs["numeric"]))
            if self.numeric_embedding == "linear":
                emb = x[..., None] * self.numeric_weight + self.numeric_bias  # (B, F_num, D)
            else:
                angle = 2 * math.pi * self.frequencies * x[..., None]  # (B, F_num, K)
                periodic = torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)  # (B, F_num, 2K)
                emb = torch.relu(torch.einsum("bfk,fkd->bfd", periodic, self.periodic_weight) + self.numeric_bias)
            missing = self.missing_embedding.expand_as(emb)  # (B, F_num, D)
            tokens.append(torch.where(seen[..., None], emb, missing))
            observed.append(seen)
        if f_cat:
            cat = inputs["categorical"].long()
            rows = present[:, None].expand_as(cat)  # (B, F_cat)
            for f, card in enumerate(self.cardinalities):
                self.check_indices(f"categorical[{self.categorical_features[f]}]", cat[:, f], rows[:, f], card)
            cat = torch.where(rows, cat, torch.zeros_like(cat))  # absent rows: never read
            tokens.append(self.category_embedding(cat + self.offsets) + self.category_bias)  # (B, F_cat, D)
            observed.append(cat != 0)
        return torch.cat(tokens, dim=1), torch.cat(observed, dim=1)

    # ------------------------------------------------------------------ forward
    def forward(self, inputs: dict[str, torch.Tensor]) -> ModalityTokens:
        """Encode each patient's row into a CLS token followed by one token per feature.

        Args:
            inputs: ``numeric``, ``numeric_observed``, ``categorical`` and ``present``.

        Returns:
            ``N = 1 + F_num + F_cat`` tokens (CLS first, then numeric, then categorical features),
            all masked for absent patients; with ``mask_missing_keys`` also the missing features'
            tokens. ``times`` is None.

        Shapes:
            - numeric: ``(B, F_num)`` float, numeric_observed: ``(B, F_num)`` bool
            - categorical: ``(B, F_cat)`` long, present: ``(B,)`` bool
            - output tokens: ``(B, 1 + F_num + F_cat, D)``, mask: ``(B, 1 + F_num + F_cat)``
        """
        features, observed = self.tokenize(inputs)
        b = features.shape[0]
        present = inputs["present"]
        x = torch.cat([self.cls.expand(b, 1, -1), features], dim=1)  # (B, N, D)
        valid = torch.cat([torch.ones_like(observed[:, :1]), observed], dim=1)  # (B, N); CLS always valid
        if self.mask_missing_keys:
            x = self.transformer(x, src_key_padding_mask=~valid)  # torch wants True = ignore this key
            mask = valid
        else:
            x = self.transformer(x)
            mask = torch.ones_like(valid)
        return ModalityTokens.from_tokens(x, mask, present)

    # ------------------------------------------------------------------ examples
    @classmethod
    def example_spec(cls) -> dict[str, Any]:
        return TabularMLPEncoder.example_spec()

    @classmethod
    def example_inputs(cls, batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
        """The tabular batch format, identical to :class:`TabularMLPEncoder` (a drop-in replacement).

        Example:
            >>> x = FTTransformerEncoder.example_inputs()
            >>> sorted(x)
            ['categorical', 'numeric', 'numeric_observed', 'present']
        """
        return TabularMLPEncoder.example_inputs(batch_size, seed)
