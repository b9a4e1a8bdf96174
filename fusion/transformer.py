"""Early fusion with a transformer over all tokens of all modalities and a CLS token."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from clinfuse.encoders.base import ModalityTokens
from clinfuse.fusion.base import FusionHead, FusionOutput
from clinfuse.fusion.packed_encoder import check_supported, encode_packed, packed_pays


def keep_last_tokens(toks: ModalityTokens, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Compact each patient's real tokens to the front, keeping at most ``limit`` of them: the
    most recent ones.

    With ``toks.times`` the tokens of the latest times are kept (the later position first among
    equal times), so a summary token that carries the patient's last observation time (STraTS)
    survives the cap wherever the encoder put it; without times, the last ``limit`` positions.
    The kept tokens stay in their original order. The result depends on ``mask`` and ``times``
    only, never on padding content.

    Shapes:
        - toks.tokens: ``(B, N, D)``, toks.mask and toks.times: ``(B, N)``
        - returns tokens ``(B, min(N, limit), D)`` and mask ``(B, min(N, limit))``
    """
    mask = toks.mask
    b, n = mask.shape
    if n <= limit:
        return toks.tokens, mask
    if toks.times is None:
        from_end = mask.flip(1).cumsum(1).flip(1)  # (B, N): real tokens at or after each position
        keep = mask & (from_end <= limit)  # (B, N)
    else:
        later_first = torch.arange(n - 1, -1, -1, device=mask.device).expand(b, n)  # (B, N) positions
        t = torch.where(mask, toks.times, torch.full_like(toks.times, -torch.inf)).gather(1, later_first)
        ranked = later_first.gather(1, torch.sort(t, dim=1, descending=True, stable=True).indices)  # (B, N)
        keep = torch.zeros_like(mask).scatter_(1, ranked[:, :limit], True) & mask  # (B, N)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :limit]  # (B, limit)
    tokens = toks.tokens.gather(1, order[..., None].expand(-1, -1, toks.tokens.shape[2]))  # (B, limit, D)
    return tokens, keep.gather(1, order)


class TransformerFusion(FusionHead):
    """A learned CLS token attends to every real token of every modality.

    Each modality's tokens get a learned modality-type embedding, all tokens are concatenated in the
    head's canonical modality order behind the CLS token, and a pre-norm ``nn.TransformerEncoder``
    runs with a key-padding mask. The CLS token is never masked, so a patient without any data still
    has one key to attend to (no all-masked softmax row, no NaN). ``pooled`` is the CLS output;
    ``per_modality`` is the masked mean of each modality's output tokens (zero where absent).

    Args:
        d_model: width ``D`` of tokens and output.
        modalities: the modality names this head accepts.
        n_layers: transformer layers.
        n_heads: attention heads (must divide ``d_model``).
        dropout: dropout on the residual and feed-forward paths of the transformer layers.
        attention_dropout: dropout on the attention weights (default 0: on CPU drawing a
            (B, heads, N, N) dropout mask costs several times the attention itself).
        max_tokens_per_modality: if set, each modality keeps at most this many real tokens per
            patient (bounds the attention cost of long token sequences such as time series): those
            of the latest ``times`` for timed tokens (:func:`keep_last_tokens`; STraTS's summary
            tokens carry the last observation time and are kept), the last positions for untimed
            ones (so an untimed leading CLS token, as the FT-Transformer's, is dropped first: set the
            cap above such a modality's token count).
    """

    def __init__(
        self,
        d_model: int,
        modalities: Sequence[str],
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        max_tokens_per_modality: int | None = None,
    ) -> None:
        super().__init__(d_model, modalities)
        if n_layers < 1 or n_heads < 1:
            raise ValueError(f"TransformerFusion: n_layers and n_heads must be >= 1, got {n_layers}, {n_heads}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"TransformerFusion: attention_dropout must be in [0, 1), got {attention_dropout}")
        if d_model % n_heads != 0:
            raise ValueError(f"TransformerFusion: n_heads={n_heads} must divide d_model={d_model}")
        if max_tokens_per_modality is not None and max_tokens_per_modality < 1:
            raise ValueError(f"TransformerFusion: max_tokens_per_modality must be >= 1, got {max_tokens_per_modality}")
        self.max_tokens_per_modality = max_tokens_per_modality
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        self.type_embedding = nn.Parameter(torch.randn(len(self.modalities), d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        layer.self_attn.dropout = attention_dropout  # MultiheadAttention reads this float at call time
        # enable_nested_tensor=False: the nested-tensor fast path drops padded rows and changes the
        # numerics with the padding layout; we want outputs that do not depend on padding at all
        self.encoder = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        check_supported(self.encoder)

    def forward(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """Fuse by self-attention over the concatenated tokens.

        In eval mode on CPU the encoder runs on packed, length-bucketed tokens
        (:mod:`clinfuse.fusion.packed_encoder`): the same outputs, several times faster there. On an
        accelerator one padded pass is kept (chunking would multiply kernel launches).

        Args:
            inputs: modality -> tokens; absent modalities may be omitted or have ``present=False``.

        Returns:
            ``pooled`` (CLS output) and ``per_modality`` (one entry per modality of the head).

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)``, inputs[m].mask: ``(B, N_m)``
            - pooled and every per_modality value: ``(B, D)``
        """
        b = self.check_inputs(inputs)
        ref = self.reference(inputs)
        x, mask, spans = self._sequence(inputs, b, ref.device)
        if self.training or not packed_pays(x):
            # torch wants True = PAD in src_key_padding_mask; our mask is True = real token
            out = self.encoder(x, src_key_padding_mask=~mask)  # (B, 1 + sum N_m, D)
        else:
            out = encode_packed(self.encoder, x, mask)  # (B, 1 + sum N_m, D)
        per_modality = {}
        for name in self.modalities:
            if name not in spans:
                per_modality[name] = ref.new_zeros(b, self.d_model)
                continue
            lo, hi = spans[name]
            m = mask[:, lo:hi]  # (B, N_m)
            h = torch.where(m[..., None], out[:, lo:hi], torch.zeros_like(out[:, lo:hi]))  # (B, N_m, D)
            per_modality[name] = h.sum(1) / m.sum(1, keepdim=True).clamp(min=1).to(h.dtype)  # (B, D)
        return FusionOutput(pooled=out[:, 0], per_modality=per_modality)

    def pooled_output(self, inputs: Mapping[str, ModalityTokens]) -> FusionOutput:
        """``pooled`` only (no ``per_modality``); in eval mode the last layer then computes the CLS
        token's output alone, which is all the task head reads.

        Shapes:
            - inputs[m].tokens: ``(B, N_m, D)`` -> pooled ``(B, D)``
        """
        b = self.check_inputs(inputs)
        x, mask, _ = self._sequence(inputs, b, self.reference(inputs).device)
        if self.training or not packed_pays(x):
            return FusionOutput(pooled=self(inputs).pooled)
        return FusionOutput(pooled=encode_packed(self.encoder, x, mask, first_only=True))

    def _sequence(self, inputs: Mapping[str, ModalityTokens], b: int, device: torch.device):
        """CLS + every modality's tokens (type embedding added, padding zeroed) in canonical order.

        Returns ``x (B, 1 + sum N_m, D)``, ``mask (B, 1 + sum N_m)`` (True = real) and each
        modality's ``(start, end)`` span.
        """
        parts, masks, spans = [], [], {}
        start = 1  # position 0 is CLS
        for name, toks in self.ordered(inputs):
            tokens, mask = toks.tokens, toks.mask & toks.present[:, None]
            if self.max_tokens_per_modality is not None:
                tokens, mask = keep_last_tokens(ModalityTokens(tokens, mask, mask.any(1), toks.times), self.max_tokens_per_modality)
            parts.append((tokens, mask, self.type_embedding[self.modalities.index(name)]))
            masks.append(mask)
            spans[name] = (start, start + mask.shape[1])
            start += mask.shape[1]
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=device), *masks], dim=1)  # (B, 1 + sum N_m)
        if torch.is_grad_enabled():
            seqs = [torch.where(m[..., None], t, torch.zeros_like(t)) + e for t, m, e in parts]  # (B, N_m, D) each
            return torch.cat([self.cls.expand(b, 1, -1), *seqs], dim=1), mask, spans  # (B, 1 + sum N_m, D)
        # without autograd: written in place into one buffer (a third of the memory traffic; out= and
        # in-place ops cannot record gradients, hence the branch). The same values.
        dtype = functools.reduce(torch.promote_types, [t.dtype for t, _, _ in parts], self.cls.dtype)
        x = torch.empty(b, start, self.d_model, dtype=dtype, device=device)  # (B, 1 + sum N_m, D)
        x[:, 0] = self.cls
        zero = torch.zeros((), dtype=dtype, device=device)
        for (tokens, m, embedding), (lo, hi) in zip(parts, spans.values()):
            seg = x[:, lo:hi]  # (B, N_m, D) view
            torch.where(m[..., None], tokens.to(dtype), zero, out=seg)  # padding zeroed, whatever it held
            seg.add_(embedding)
        return x, mask, spans
