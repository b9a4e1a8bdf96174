"""Inference for a pre-norm ``nn.TransformerEncoder`` on packed, length-bucketed token sequences.

In eval mode ``nn.TransformerEncoder`` runs its fused fast path, which with a key-padding mask is
about four times slower on CPU than ``F.scaled_dot_product_attention`` with the same mask, and
attends over every padded position of the longest patient in the batch. Attention with a padding
mask does not depend on where the padding is or how much of it there is, and the encoder has no
positional encoding, so the same outputs come from:

1. packing each patient's real tokens to the front (stable order),
2. sorting patients by real-token count and cutting them into chunks of ``chunk`` patients, so each
   chunk is padded only to its own longest patient,
3. running each layer by hand with SDPA (the same weights, the same maths as the layer's forward
   in eval mode: no dropout).

The results equal the module's own forward to float rounding (checked by
``tests/fusion/test_packed_encoder.py``). Hand-written because torch's nested-tensor path (the
library's answer to padding) changes numerics with the padding layout and does not apply to
pre-norm layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: patients per chunk: measured best on CPU for a 256-patient batch of the quickstart model
#: (16-32 tie; 8 pays per-call overhead, 64+ pays padding again).
CHUNK = 32


def packed_pays(x: torch.Tensor) -> bool:
    """Whether the packed path is the faster one for tokens on ``x``'s device: measured on CPU
    only; on an accelerator one padded batched pass avoids many small kernel launches."""
    return x.device.type == "cpu"


def check_supported(encoder: nn.TransformerEncoder) -> None:
    """Raise ``ValueError`` unless every layer is one :func:`layer_forward` reproduces."""
    for i, layer in enumerate(encoder.layers):
        attn = layer.self_attn
        if not (layer.norm_first and attn.batch_first and attn._qkv_same_embed_dim and attn.bias_k is None):
            raise ValueError(
                f"packed_encoder: layer {i} must be pre-norm, batch_first, with one in-projection and "
                "no bias_k/bias_v"
            )


def layer_forward(layer: nn.TransformerEncoderLayer, x: torch.Tensor, keys: torch.Tensor | None,
                  queries: int | None = None) -> torch.Tensor:
    """One pre-norm encoder layer in eval mode (dropout off), with SDPA (for ``queries``, the
    same attention read from the normalised tokens: :func:`_few_query_attention`).

    Args:
        layer: a ``norm_first=True``, ``batch_first=True`` layer.
        x: the token sequence.
        keys: True = real token (attended to); None = every token is real.
        queries: compute the outputs of the first ``queries`` positions only (the keys and values
            still come from every token), e.g. 1 for a CLS token in the last layer.

    Shapes:
        - x: ``(B, N, D)``; keys: ``(B, N)`` bool
        - returns ``(B, Q, D)`` with ``Q = queries or N``
    """
    b, n, d = x.shape
    attn = layer.self_attn
    h, dh = attn.num_heads, d // attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    z = layer.norm1(x)  # (B, N, D)
    if queries is None:
        qkv = F.linear(z, w, bias).view(b, n, 3, h, dh).permute(2, 0, 3, 1, 4)  # (3, B, H, N, dh)
        mask = None if keys is None else keys[:, None, None, :]  # (B, 1, 1, N), True = attend
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # (B, H, N, dh)
    else:
        x = x[:, :queries]  # (B, Q, D)
        o = _few_query_attention(attn, z, queries, keys)  # (B, H, Q, dh)
    x = x + attn.out_proj(o.transpose(1, 2).reshape(b, -1, d))  # (B, Q, D)
    return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


def _few_query_attention(attn: nn.MultiheadAttention, z: torch.Tensor, queries: int,
                         keys: torch.Tensor | None) -> torch.Tensor:
    """The attention heads' outputs for the first ``queries`` positions, without projecting every
    token to a key and a value (hand-written: an identity of the maths, no kernel computes it).

    With ``k_j = W_k z_j + b_k`` and ``v_j = W_v z_j + b_v`` per head, a query ``q`` scores
    ``q . k_j = (W_k^T q) . z_j + q . b_k``; the last term is the same for every key and cancels in
    the softmax. And since the weights ``a_j`` sum to one, ``sum_j a_j v_j = W_v (sum_j a_j z_j) +
    b_v``. So each head reads the normalised tokens ``z`` directly: a ``D``-vector per head and
    query instead of ``2 D`` projections of each of the ``N`` tokens (4-16x less work for one CLS
    query; the last layer of a CLS-only pass).

    Shapes:
        - z: ``(B, N, D)`` (the layer's ``norm1`` output); keys: ``(B, N)`` bool or None
        - returns ``(B, H, Q, dh)``, as ``F.scaled_dot_product_attention`` would
    """
    b, n, d = z.shape
    h, dh = attn.num_heads, d // attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    if torch.is_autocast_enabled(z.device.type):  # these small products are no faster in bfloat16 than
        with torch.autocast(z.device.type, enabled=False):  # the casts to it: run them in z's float32
            return _few_query_attention(attn, z.float(), queries, keys)
    q = F.linear(z[:, :queries], w[:d], None if bias is None else bias[:d])  # (B, Q, D)
    q = q.view(b, queries, h, dh).transpose(1, 2)  # (B, H, Q, dh)
    u = torch.einsum("bhqe,hed->bhqd", q, w[d : 2 * d].view(h, dh, d)) * dh**-0.5  # (B, H, Q, D)
    scores = (u.reshape(b, h * queries, d) @ z.transpose(1, 2)).float()  # (B, H * Q, N); float32 softmax
    if keys is not None:
        scores = scores.masked_fill(~keys[:, None, :], float("-inf"))
    weights = scores.softmax(-1).to(z.dtype)  # (B, H * Q, N); every row has a real key (position 0)
    zbar = (weights @ z).view(b, h, queries, d)  # (B, H, Q, D) each head's weighted mean of z
    o = torch.einsum("bhqd,hed->bhqe", zbar, w[2 * d :].view(h, dh, d))  # (B, H, Q, dh)
    return o if bias is None else o + bias[2 * d :].view(1, h, 1, dh)


def encode_packed(encoder: nn.TransformerEncoder, x: torch.Tensor, mask: torch.Tensor,
                  first_only: bool = False, chunk: int = CHUNK) -> torch.Tensor:
    """``encoder(x, src_key_padding_mask=~mask)`` for an encoder in eval mode, computed per chunk of
    patients of similar real length with the padding packed away.

    Args:
        encoder: pre-norm layers (:func:`check_supported`), optional final ``norm``.
        x: tokens; position 0 must be real for every patient (e.g. a CLS token).
        mask: True = real token.
        first_only: return only position 0's output (the last layer then computes one query).
        chunk: patients per chunk.

    Returns:
        ``(B, N, D)`` outputs at the input positions (zero at padding), or ``(B, D)`` when
        ``first_only``.

    Shapes:
        - x: ``(B, N, D)``, mask: ``(B, N)`` bool
    """
    b, n, d = x.shape
    out = x.new_zeros(b, d) if first_only else x.new_zeros(b, n, d)
    counts = mask.sum(1)  # (B,)
    order = torch.argsort(counts, stable=True)  # (B,) shortest first
    # real tokens first, in their original order (position 0 stays first)
    positions = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, N)
    layers = list(encoder.layers)
    for start in range(0, b, chunk):
        rows = order[start : start + chunk]  # (C,)
        width = int(counts[rows].max())
        pos = positions[rows, :width]  # (C, W)
        h = x[rows[:, None], pos]  # (C, W, D)
        keys = mask[rows[:, None], pos]  # (C, W)
        keys = None if bool(keys.all()) else keys
        for i, layer in enumerate(layers):
            h = layer_forward(layer, h, keys, 1 if first_only and i == len(layers) - 1 else None)
        if encoder.norm is not None:
            h = encoder.norm(h)
        if first_only:
            out[rows] = h[:, 0]
        else:
            h = h if keys is None else h * keys[..., None].to(h.dtype)  # (C, W, D) zero at padding
            out[rows[:, None], pos] = h
    return out
