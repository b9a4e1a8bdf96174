"""Masked softmax attention pooling over a long bag, computed in chunks with an online softmax.

Both whole-slide-image encoders (:mod:`clinfuse.encoders.abmil`, :mod:`clinfuse.encoders.transmil`)
pool a bag of ``P`` patches with softmax attention from ``K`` queries. A slide can hold 100,000
patches, so the bag is visited in chunks of ``chunk_size`` patches: each chunk's scores and values
are produced by a callback (which may also project the raw patch features, so nothing of size
``P x hidden`` needs to exist at once), and the softmax is accumulated with a running maximum,
running denominator and running weighted sum (the "online softmax" of flash-attention, Milakov &
Gimelshein 2018). Memory is ``O(B * H * K * (chunk_size + Dv))``, time is linear in ``P``; the
result equals the ordinary masked softmax up to float rounding.

Hand-written because torch's ``scaled_dot_product_attention`` needs the whole key/value bag in
memory, and gated-attention MIL scores are not dot products.

Shapes use ``B`` (batch), ``H`` (heads), ``K`` (queries / attention branches), ``P`` (patches of
the bag) and ``Dv`` (value width).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from clinfuse.encoders.base import upcast_half

#: a callback ``(start, end) -> (scores, values)`` for the patches ``start:end`` of the bag:
#: scores ``(B, H, K, c)`` and values ``(B, H or 1, c, Dv)`` with ``c = end - start``
ChunkFn = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


class PooledAttention(NamedTuple):
    """The result of :func:`chunked_attention_pool`.

    Attributes:
        pooled: ``(B, H, K, Dv)`` softmax-weighted sum of the values; exactly zero for a row with no
            valid patch.
        lse: ``(B, H, K)`` log-sum-exp of the valid scores (``-inf`` for a row with no valid patch),
            so ``exp(score - lse)`` are the attention weights.
        weights: ``(B, H, K, P)`` the attention weights (zero at invalid patches, every valid row
            sums to one) when asked for with ``return_weights=True``, else None.
    """

    pooled: torch.Tensor
    lse: torch.Tensor
    weights: torch.Tensor | None


def chunked_attention_pool(
    chunk_fn: ChunkFn, valid: torch.Tensor, chunk_size: int = 4096, return_weights: bool = False
) -> PooledAttention:
    """Softmax-pool the values of the valid patches, one chunk of patches at a time.

    For every ``(b, h, k)``: ``pooled = sum_p softmax_p(score[p] over valid p) * value[p]``. Scores
    and values at invalid patches are never used in arithmetic (they are replaced with
    ``torch.where`` first), so NaN/inf there cannot leak into the result.

    Args:
        chunk_fn: ``(start, end) -> (scores (B, H, K, c), values (B, H or 1, c, Dv))`` for the
            patches ``start:end``; called once per chunk, in order.
        valid: ``(B, P)`` bool, True marks a real patch.
        chunk_size: patches per chunk (``>= 1``).
        return_weights: also return the ``(B, H, K, P)`` attention weights (keeps all the scores:
            still linear in ``P``).

    Returns:
        A :class:`PooledAttention`.

    Raises:
        ValueError: a non-positive ``chunk_size``, or a callback output whose shape does not match
            the chunk.

    Shapes:
        - valid: ``(B, P)``
        - pooled: ``(B, H, K, Dv)``, lse: ``(B, H, K)``, weights: ``(B, H, K, P)``
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    b, p = valid.shape
    m = l = acc = None  # running max, running denominator, running weighted sum
    kept: list[torch.Tensor] = []
    for start in range(0, max(p, 1), chunk_size):
        end = min(start + chunk_size, p)
        scores, values = chunk_fn(start, end)
        scores, values = upcast_half(scores), upcast_half(values)  # the running sums stay float32 under autocast
        c = end - start
        if scores.dim() != 4 or scores.shape[0] != b or scores.shape[-1] != c:
            raise ValueError(f"chunk scores must have shape (B={b}, H, K, {c}), got {tuple(scores.shape)}")
        if values.dim() != 4 or values.shape[0] != b or values.shape[2] != c:
            raise ValueError(f"chunk values must have shape (B={b}, H, {c}, Dv), got {tuple(values.shape)}")
        if m is None:
            heads, k, dv = scores.shape[1], scores.shape[2], values.shape[-1]
            m = scores.new_full((b, heads, k), float("-inf"))  # (B, H, K)
            l = scores.new_zeros((b, heads, k))  # (B, H, K)
            acc = scores.new_zeros((b, heads, k, dv))  # (B, H, K, Dv)
        if end == start:
            continue  # an empty bag axis: nothing to accumulate
        ok = valid[:, None, None, start:end]  # (B, 1, 1, c)
        scores = torch.where(ok, scores, float("-inf"))  # (B, H, K, c)
        values = torch.where(ok.transpose(-1, -2), values, 0.0)  # (B, H|1, c, Dv)
        # the reference point cancels exactly in the result, so no gradient needs to flow through it
        m_new = torch.maximum(m, scores.amax(-1)).detach()  # (B, H, K)
        ref = torch.where(torch.isfinite(m_new), m_new, 0.0)  # rows with no valid patch yet: any finite ref
        scale = torch.exp(m - ref)  # (B, H, K); exp(-inf) = 0 for rows that had nothing before
        e = torch.exp(scores - ref[..., None])  # (B, H, K, c); exactly 0 at invalid patches
        l = l * scale + e.sum(-1)
        acc = acc * scale[..., None] + e @ values  # (B, H, K, Dv)
        m = m_new
        if return_weights:
            kept.append(scores)
    has_any = l > 0  # (B, H, K)
    safe_l = torch.where(has_any, l, 1.0)  # no 0/0 (and no NaN gradient) for empty rows
    pooled = torch.where(has_any[..., None], acc / safe_l[..., None], 0.0)  # (B, H, K, Dv)
    lse = torch.where(has_any, _log_sum_exp(m, safe_l), float("-inf"))  # (B, H, K)
    weights = None
    if return_weights:
        if kept:
            all_scores = torch.cat(kept, -1)  # (B, H, K, P)
            safe_lse = torch.where(has_any, lse, 0.0)
            weights = torch.where(valid[:, None, None, :], torch.exp(all_scores - safe_lse[..., None]), 0.0)
        else:
            weights = acc.new_zeros((*acc.shape[:3], 0))  # (B, H, K, 0)
    return PooledAttention(pooled, lse, weights)


def _log_sum_exp(m: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """``m + log(l)``: the log-sum-exp from the running max ``m`` and denominator ``l``.

    ``m`` is ``-inf`` only where ``l`` is zero; the caller masks those rows, so ``m`` is replaced
    with 0 there to keep the expression finite.

    Shapes:
        m, l and the result: ``(B, H, K)``.
    """
    return torch.where(torch.isfinite(m), m, 0.0) + torch.log(l)
