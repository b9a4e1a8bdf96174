"""Cascaded fusion after 3MAT: a latent query visits the modalities one stage at a time.

Reference: "Cascaded Multi-Modal Mixing Transformers for Alzheimer's Disease Classification with
Incomplete Data" (3MAT). A learned latent query passes through one stage per modality, in a fixed
order; each stage mixes the query with that modality's tokens by cross-attention. A patient who
lacks a modality skips its stage, so its output is exactly that of a cascade without the stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput


class CascadeStage(nn.Module):
    """One stage: pre-norm self-attention, pre-norm cross-attention to one modality, feed-forward.

    Each sub-block adds its output to the query (residual). As in Flamingo's Perceiver resampler,
    the cross-attention keys are the (normed) query tokens followed by the modality's (normed)
    tokens: the query chooses how much to take from the modality, even from a single token (with
    one key only, softmax is 1 and the query side of the attention would learn nothing), and a
    patient without any token still has keys to attend to (no all-masked softmax row, no NaN).

    Args:
        d_model: width ``D``.
        n_heads: attention heads (must divide ``d_model``).
        dropout: dropout on the residual paths and inside the feed-forward block.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=attention_dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.cross_attn = nn.MultiheadAttention(d_model, n_heads, dropout=attention_dropout, batch_first=True)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_model, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Update the query with one modality's tokens.

        Args:
            query: the latent query tokens.
            tokens: the modality's tokens (finite everywhere).
            valid: True = a real token of the modality; rows may be all False.

        Returns:
            The updated query.

        Shapes:
            - query: ``(B, Q, D)`` with ``Q = n_queries``
            - tokens: ``(B, N, D)``, valid: ``(B, N)``
            - returns: ``(B, Q, D)``
        """
        h = self.norm_self(query)  # (B, Q, D)
        query = query + self.dropout(self.self_attn(h, h, h, need_weights=False)[0])  # (B, Q, D)
        h = self.norm_cross(query)  # (B, Q, D)
        kv = torch.cat([h, self.norm_kv(tokens)], dim=1)  # (B, Q + N, D)
        keep = torch.cat([valid.new_ones(h.shape[:2]), valid], dim=1)  # (B, Q + N): the query is never masked
        # torch wants True = PAD in key_padding_mask; `keep` is True = real token
        mixed = self.cross_attn(h, kv, kv, key_padding_mask=~keep, need_weights=False)[0]  # (B, Q, D)
        query = query + self.dropout(mixed)  # (B, Q, D)
        return query + self.dropout(self.ffn(self.norm_ffn(query)))  # (B, Q, D)


def clean_tokens(toks: ModalityTokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The modality's tokens with padding zeroed (its content never reaches a stage), their mask,
    and which patients really have the modality.

    Shapes:
        - toks.tokens: ``(B, N, D)``, toks.mask: ``(B, N)``
        - returns tokens ``(B, N, D)``, valid ``(B, N)``, present ``(B,)``
    """
    valid = toks.mask & toks.present[:, None]  # (B, N)
    tokens = torch.where(valid[..., None], toks.tokens, torch.zeros_like(toks.tokens))  # (B, N, D)
    return tokens, valid, valid.any(1)


class CascadedFusion(FusionHead):
    """A learned latent query passes through one cross-attention stage per modality, in order.

    Stage ``k`` updates the query with the tokens of modality ``order[k]`` (see
    :class:`CascadeStage`); every stage has its own parameters, held in ``stages``, an
    ``nn.ModuleDict`` keyed by modality name. Skipping is per patient: a patient lacking a
    modality (``present=False`` or omitted from the dict) keeps its query unchanged through that
    stage, so its output equals that of a cascade built without the stage.
    With ``n_queries=1`` a stage's self-attention sees one token and reduces to a linear map; it
    starts to mix only with ``n_queries > 1``.

    The pooled state after a stage is ``norm(query.mean(1))`` (mean over the query tokens, then
    one shared final LayerNorm ``norm``). Outputs:

    - ``pooled``: the pooled state after the last stage;
    - ``per_step`` (when ``aux_outputs``): the pooled state after each stage, in stage order, one
      entry per modality of the head (a skipped stage repeats the previous state), so
      ``per_step[-1]`` is ``pooled``;
    - ``per_modality[m]``: the pooled state right after the stage of ``m`` (zero for patients
      lacking ``m``).

    Args:
        d_model: width ``D`` of tokens and output.
        modalities: the modality names this head accepts.
        order: the stage order, a permutation of ``modalities`` (default: ``modalities``).
        n_queries: number ``Q`` of latent query tokens.
        n_heads: attention heads (must divide ``d_model``).
        dropout: dropout on the residual and feed-forward paths.
        attention_dropout: dropout on the attention weights.
        aux_outputs: return ``per_step`` (for auxiliary predictions after each stage).
    """

    def __init__(
        self,
        d_model: int,
        modalities: Sequence[str],
        order: list[str] | None = None,
        n_queries: int = 1,
        n_heads: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        aux_outputs: bool = True,
    ) -> None:
        super().__init__(d_model, modalities)
        if d_model % n_heads != 0:
            raise ValueError(f"CascadedFusion: n_heads={n_heads} must divide d_model={d_model}")
        if n_queries < 1:
            raise ValueError(f"CascadedFusion: n_queries must be >= 1, got {n_queries}")
        dotted = [m for m in self.modalities if "." in m or not m]
        if dotted:
            raise ValueError(f"CascadedFusion: modality names {dotted} cannot key a ModuleDict (empty or with '.')")
        self.order = self.check_order(order)
        self.aux_outputs = aux_outputs
        self.latent = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)  # (Q, D)
        self.stages = nn.ModuleDict(
            {m: CascadeStage(d_model, n_heads, dropout, attention_dropout) for m in self.order}
        )
        self.norm = nn.LayerNorm(d_model)

    def pool(self, query: torch.Tensor) -> torch.Tensor:
        """The pooled state: mean over query tokens, then the final LayerNorm.

        Shapes:
            - query: ``(B, Q, D)``; returns ``(B, D)``
        """
        return self.norm(query.mean(1))  # (B, D)

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Run the cascade; each patient skips the stages of the modalities it lacks.

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``pooled``, ``per_modality`` (one entry per modality of the head) and, when
            ``aux_outputs``, ``per_step`` (one entry per stage, in stage order).

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled, every per_modality value and every per_step entry: ``(B, D)``
        """
        b = self.check_inputs(inputs)
        ref = self.reference(inputs)
        query = self.latent.to(ref.dtype).expand(b, -1, -1)  # (B, Q, D)
        pooled = self.pool(query)  # (B, D): no stage yet
        steps, per_modality = [], {}
        for name in self.order:
            if name in inputs:
                tokens, valid, present = clean_tokens(inputs[name])
                updated = self.stages[name](query, tokens, valid)  # (B, Q, D), finite for every row
                # patients without the modality keep their query: their (self-only) update is dropped
                query = torch.where(present[:, None, None], updated, query)  # (B, Q, D)
                pooled = self.pool(query)  # (B, D)
                per_modality[name] = torch.where(present[:, None], pooled, torch.zeros_like(pooled))  # (B, D)
            else:
                per_modality[name] = ref.new_zeros(b, self.d_model)
            steps.append(pooled)
        return FusionOutput(
            pooled=pooled,
            per_modality={m: per_modality[m] for m in self.modalities},
            per_step=steps if self.aux_outputs else None,
        )
